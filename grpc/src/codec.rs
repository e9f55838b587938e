//! A prost codec whose decoder hands the handler the decoding error instead of answering it, so
//! the CA can record the refusal of a signing request that does not decode.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Encodes `E` with prost; decodes `D` into `Result<D, prost::DecodeError>`.
pub(crate) struct Lenient<E, D>(PhantomData<(E, D)>);

impl<E, D> Default for Lenient<E, D> {
    fn default() -> Self {
        Lenient(PhantomData)
    }
}

impl<E, D> Codec for Lenient<E, D>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = Result<D, prost::DecodeError>;
    type Encoder = ProstEncoder<E>;
    type Decoder = LenientDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        LenientDecoder(PhantomData)
    }
}

/// See [`Lenient`].
pub(crate) struct LenientDecoder<D>(PhantomData<D>);

impl<D: prost::Message + Default> Decoder for LenientDecoder<D> {
    type Item = Result<D, prost::DecodeError>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        Ok(Some(D::decode(buf)))
    }
}
