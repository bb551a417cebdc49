//! Response messages that may arrive already encoded, and the codec that
//! sends them as they are.
//!
//! One change reaches every watcher of WatchUserEvents as the same
//! `UserEvent`. Encoded by each watcher's stream, it cost a thousand
//! encodings and two thousand small allocations for a thousand watchers;
//! encoded once when the change is published, each watcher only copies its
//! bytes into its stream's buffer. ListUsers sends each user encoded
//! straight from the stored one (`User::encode_wire`), without the copy a
//! `pb::User` would take. The bytes on the wire are the same.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// A response message: built to be encoded, or encoded already.
#[derive(Clone, Debug, PartialEq)]
pub enum Outgoing<M> {
    Message(M),
    /// `M`'s encoding (without the gRPC frame's 5-byte prefix, which the
    /// codec's caller adds).
    Encoded(Bytes),
}

impl<M: prost::Message + Default> Outgoing<M> {
    /// The message itself, decoded when it was sent encoded.
    pub fn into_message(self) -> Result<M, prost::DecodeError> {
        match self {
            Outgoing::Message(message) => Ok(message),
            Outgoing::Encoded(bytes) => M::decode(bytes),
        }
    }
}

/// The prost codec, with responses that may be [`Outgoing::Encoded`].
#[derive(Debug)]
pub struct OutgoingCodec<M, Req>(PhantomData<(M, Req)>);

impl<M, Req> Default for OutgoingCodec<M, Req> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<M, Req> Codec for OutgoingCodec<M, Req>
where
    M: prost::Message + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
{
    type Encode = Outgoing<M>;
    type Decode = Req;
    type Encoder = OutgoingEncoder<M>;
    type Decoder = ProstDecoder<Req>;

    fn encoder(&mut self) -> Self::Encoder {
        OutgoingEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

#[derive(Debug)]
pub struct OutgoingEncoder<M>(PhantomData<M>);

impl<M: prost::Message> Encoder for OutgoingEncoder<M> {
    type Item = Outgoing<M>;
    type Error = Status;

    fn encode(&mut self, item: Outgoing<M>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            // As tonic-prost's encoder: the buffer grows, so it never runs out.
            Outgoing::Message(message) => message
                .encode(buf)
                .expect("an EncodeBuf grows to fit the message"),
            Outgoing::Encoded(bytes) => buf.put_slice(&bytes),
        }
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
