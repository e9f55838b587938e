//! Every CA key format and algorithm Fulcio's file CA reads, made by `openssl` (not by Keyless CA)
//! and loaded with `load_file_ca`: the signer must hold the key openssl says (same
//! SubjectPublicKeyInfo) and sign what that key verifies. Encrypted forms are also tried without a
//! password and with a wrong one. Needs the `openssl` command (`scripts/test.sh` installs it).

use std::path::Path;
use std::process::Command;

use keyless_ca::keys::{Hash, KeyType, PublicKey};
use keyless_config::{FileCaConfig, SecretRef};

const PASSWORD: &str = "fulcio-fileca-pw";

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/test.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

struct Case {
    name: &'static str,
    /// Shell-free openssl invocations writing `key.pem` from `base.pem` (a PKCS#8 key).
    convert: &'static [&'static [&'static str]],
    encrypted: bool,
    /// The PEM label the converted file must carry (so each case tests the format it names).
    label: &'static str,
}

const PASS: &str = "pass:fulcio-fileca-pw";

const PKCS8: &[Case] = &[
    Case {
        name: "PKCS#8",
        convert: &[&["pkey", "-in", "base.pem", "-out", "key.pem"]],
        encrypted: false,
        label: "PRIVATE KEY",
    },
    Case {
        name: "PKCS#8 PBES2 (PBKDF2-SHA256, AES-256-CBC: OpenSSL 3's default)",
        convert: &[&[
            "pkcs8", "-topk8", "-in", "base.pem", "-out", "key.pem", "-passout", PASS,
        ]],
        encrypted: true,
        label: "ENCRYPTED PRIVATE KEY",
    },
];

const PBES2_VARIANTS: &[Case] = &[
    Case {
        name: "PKCS#8 PBES2 (PBKDF2-SHA1, 3DES: older OpenSSL)",
        convert: &[&[
            "pkcs8",
            "-topk8",
            "-v2",
            "des3",
            "-v2prf",
            "hmacWithSHA1",
            "-in",
            "base.pem",
            "-out",
            "key.pem",
            "-passout",
            PASS,
        ]],
        encrypted: true,
        label: "ENCRYPTED PRIVATE KEY",
    },
    Case {
        name: "PKCS#8 PBES2 (scrypt, AES-128-CBC)",
        convert: &[&[
            "pkcs8",
            "-topk8",
            "-scrypt",
            "-v2",
            "aes-128-cbc",
            "-in",
            "base.pem",
            "-out",
            "key.pem",
            "-passout",
            PASS,
        ]],
        encrypted: true,
        label: "ENCRYPTED PRIVATE KEY",
    },
];

const RSA_ONLY: &[Case] = &[
    Case {
        name: "PKCS#1",
        convert: &[&["rsa", "-traditional", "-in", "base.pem", "-out", "key.pem"]],
        encrypted: false,
        label: "RSA PRIVATE KEY",
    },
    Case {
        name: "PKCS#1, legacy AES-256-CBC",
        convert: &[&[
            "rsa",
            "-traditional",
            "-aes256",
            "-in",
            "base.pem",
            "-out",
            "key.pem",
            "-passout",
            PASS,
        ]],
        encrypted: true,
        label: "RSA PRIVATE KEY",
    },
    Case {
        name: "PKCS#1, legacy DES-EDE3-CBC",
        convert: &[&[
            "rsa",
            "-traditional",
            "-des3",
            "-in",
            "base.pem",
            "-out",
            "key.pem",
            "-passout",
            PASS,
        ]],
        encrypted: true,
        label: "RSA PRIVATE KEY",
    },
];

const EC_ONLY: &[Case] = &[
    Case {
        name: "SEC1",
        convert: &[&["ec", "-in", "base.pem", "-out", "key.pem"]],
        encrypted: false,
        label: "EC PRIVATE KEY",
    },
    Case {
        name: "SEC1, legacy AES-128-CBC",
        convert: &[&["ec", "-aes128", "-in", "base.pem", "-out", "key.pem", "-passout", PASS]],
        encrypted: true,
        label: "EC PRIVATE KEY",
    },
    Case {
        name: "SEC1 after EC PARAMETERS (openssl ecparam -genkey)",
        convert: &[
            &["ec", "-in", "base.pem", "-out", "ec.pem"],
            &["ecparam", "-name", "CURVE", "-out", "params.pem"],
        ],
        encrypted: false,
        label: "EC PRIVATE KEY",
    },
];

/// Generates a key of `genpkey` arguments, converts it per case, loads it, and checks it.
fn check_algorithm(genpkey: &[&str], key_type: KeyType, hash: Hash, curve: Option<&str>, cases: &[&[Case]]) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend(["-out", "base.pem"]);
    openssl(d, &args);
    let spki = openssl(d, &["pkey", "-in", "base.pem", "-pubout", "-outform", "DER"]);
    std::fs::write(d.join("pw"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(d.join("bad-pw"), "not-the-password\n").unwrap();
    for case in cases.iter().flat_map(|c| c.iter()) {
        let what = format!("{key_type:?} {}", case.name);
        for step in case.convert {
            let step: Vec<&str> = step
                .iter()
                .map(|a| if *a == "CURVE" { curve.unwrap_or(a) } else { a })
                .collect();
            openssl(d, &step);
        }
        if d.join("params.pem").exists() {
            let text = std::fs::read_to_string(d.join("params.pem")).unwrap()
                + &std::fs::read_to_string(d.join("ec.pem")).unwrap();
            std::fs::write(d.join("key.pem"), text).unwrap();
            std::fs::remove_file(d.join("params.pem")).unwrap();
        }
        let text = std::fs::read_to_string(d.join("key.pem")).unwrap();
        assert!(
            text.contains(&format!("-----BEGIN {}-----", case.label)),
            "{what}: {text}"
        );
        assert_eq!(
            case.name.contains("legacy"),
            text.contains("Proc-Type: 4,ENCRYPTED"),
            "{what}"
        );
        assert_eq!(
            case.name.contains("EC PARAMETERS"),
            text.contains("BEGIN EC PARAMETERS"),
            "{what}"
        );
        let cfg = |pw: Option<&str>| FileCaConfig {
            key: d.join("key.pem"),
            chain: d.join("base.pem"),
            password: pw.map(|f| SecretRef::File(d.join(f))),
        };
        let (signer, _) =
            keyless_hsm::load_file_ca(&cfg(case.encrypted.then_some("pw"))).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(signer.public_key_spki(), spki.as_slice(), "{what}");
        let key = PublicKey::from_spki_der(&spki).unwrap();
        assert_eq!(key.key_type(), key_type, "{what}");
        let sig = signer.sign(b"to be signed").unwrap();
        assert!(key.verify(hash, b"to be signed", &sig), "{what}: signature");
        if case.encrypted {
            let e = keyless_hsm::load_file_ca(&cfg(None)).err().unwrap().to_string();
            assert!(e.contains("ca.file.password is not set"), "{what}: {e}");
            let e = keyless_hsm::load_file_ca(&cfg(Some("bad-pw")))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("wrong password"), "{what}: {e}");
            assert!(!e.contains(PASSWORD) && !e.contains("not-the-password"), "{what}: {e}");
        } else {
            // As in Fulcio, a password for a key stored in the clear is ignored (with a warning).
            let (again, _) = keyless_hsm::load_file_ca(&cfg(Some("pw"))).unwrap();
            assert_eq!(again.public_key_spki(), spki.as_slice(), "{what}");
        }
    }
}

#[test]
fn ecdsa_p256() {
    let curve = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    check_algorithm(
        &curve,
        KeyType::P256,
        Hash::Sha256,
        Some("prime256v1"),
        &[PKCS8, PBES2_VARIANTS, EC_ONLY],
    );
}

#[test]
fn ecdsa_p384() {
    let curve = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"];
    check_algorithm(
        &curve,
        KeyType::P384,
        Hash::Sha384,
        Some("secp384r1"),
        &[PKCS8, EC_ONLY],
    );
}

#[test]
fn ecdsa_p521() {
    let curve = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"];
    check_algorithm(
        &curve,
        KeyType::P521,
        Hash::Sha512,
        Some("secp521r1"),
        &[PKCS8, EC_ONLY],
    );
}

#[test]
fn rsa_2048_and_3072() {
    for (bits, kt) in [("2048", KeyType::Rsa(2048)), ("3072", KeyType::Rsa(3072))] {
        let opt = format!("rsa_keygen_bits:{bits}");
        let args = ["-algorithm", "RSA", "-pkeyopt", opt.as_str()];
        let cases: &[&[Case]] = if bits == "2048" {
            &[PKCS8, PBES2_VARIANTS, RSA_ONLY]
        } else {
            &[PKCS8]
        };
        check_algorithm(&args, kt, Hash::Sha256, None, cases);
    }
}

#[test]
fn ed25519() {
    check_algorithm(
        &["-algorithm", "ED25519"],
        KeyType::Ed25519,
        Hash::None,
        None,
        &[PKCS8, PBES2_VARIANTS],
    );
}

/// The sigstore-format key made by Python (`fixtures/sigstore/make_vector.py`: hashlib's scrypt
/// and libsodium's secretbox) loads with its password and holds the key Python reported.
#[test]
fn sigstore_key_from_python() {
    let v: serde_json::Value = serde_json::from_str(include_str!("fixtures/sigstore/vector.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("key.pem"), v["pem"].as_str().unwrap()).unwrap();
    std::fs::write(d.join("pw"), v["password"].as_str().unwrap()).unwrap();
    std::fs::write(d.join("bad-pw"), "wrong").unwrap();
    std::fs::write(d.join("chain.pem"), "").unwrap();
    let cfg = |pw: &str| FileCaConfig {
        key: d.join("key.pem"),
        chain: d.join("chain.pem"),
        password: Some(SecretRef::File(d.join(pw))),
    };
    let (signer, _) = keyless_hsm::load_file_ca(&cfg("pw")).unwrap();
    use base64::Engine as _;
    let spki = base64::engine::general_purpose::STANDARD
        .decode(v["public_key_spki"].as_str().unwrap())
        .unwrap();
    assert_eq!(signer.public_key_spki(), spki.as_slice());
    let e = keyless_hsm::load_file_ca(&cfg("bad-pw")).err().unwrap().to_string();
    assert!(e.contains("wrong password"), "{e}");
    // cosign's older label is the same format.
    let cosign = v["pem"].as_str().unwrap().replace("SIGSTORE", "COSIGN");
    std::fs::write(d.join("key.pem"), cosign).unwrap();
    assert!(keyless_hsm::load_file_ca(&cfg("pw")).is_ok());
}

#[test]
fn unsupported_and_ambiguous_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("chain.pem"), "").unwrap();
    let load = |text: &str| {
        std::fs::write(d.join("key.pem"), text).unwrap();
        keyless_hsm::load_file_ca(&FileCaConfig {
            key: d.join("key.pem"),
            chain: d.join("chain.pem"),
            password: None,
        })
        .err()
        .unwrap()
        .to_string()
    };
    let e = load("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n");
    assert!(
        e.contains("\"OPENSSH PRIVATE KEY\" is not a supported private key"),
        "{e}"
    );
    openssl(d, &["genpkey", "-algorithm", "ED25519", "-out", "a.pem"]);
    openssl(d, &["genpkey", "-algorithm", "ED25519", "-out", "b.pem"]);
    let two = std::fs::read_to_string(d.join("a.pem")).unwrap() + &std::fs::read_to_string(d.join("b.pem")).unwrap();
    let e = load(&two);
    assert!(e.contains("holds 2 PEM blocks"), "{e}");
    // A key the policy refuses: secp256k1 is not one of Fulcio's curves.
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:secp256k1",
            "-out",
            "k1.pem",
        ],
    );
    let e = load(&std::fs::read_to_string(d.join("k1.pem")).unwrap());
    assert!(e.contains("not ECDSA P-256/P-384/P-521, RSA or Ed25519"), "{e}");
    assert!(e.contains("key.pem"), "names the file: {e}");
    let e = load("not pem at all");
    assert!(e.contains("PEM"), "{e}");
}
