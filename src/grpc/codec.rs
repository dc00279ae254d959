//! How the service reads request messages, so that a request it cannot take is refused like any other, with one
//! ErrorInfo (tonic's own answers are INTERNAL and OUT_OF_RANGE without one):
//! - [`Codec`] (the generated server's codec, see build.rs) is prost's, except that a message that does not decode
//!   is INVALID_ARGUMENT with reason `INVALID_REQUEST`;
//! - [`MessageLimit`] wraps the service and reads the length prefix of every request message as it arrives: one
//!   over the limit is RESOURCE_EXHAUSTED with reason `MESSAGE_TOO_LARGE` and metadata `limit_bytes` and
//!   `message_bytes`, before any of it is buffered. tonic's own `max_decoding_message_size` stays set to the same
//!   limit behind it.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tonic::codec::{BufferSettings, DecodeBuf};
use tonic::server::NamedService;
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Reason of a request that does not decode.
pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
/// Reason of a request message over `grpc.max_message_bytes`.
pub const MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";

/// Length of a gRPC message's prefix: the compressed flag and a big-endian u32 length.
const PREFIX: usize = 5;

/// The status of a request message that does not decode. prost's description names the field path and what was
/// wrong with its encoding, never a value.
pub fn undecodable(description: &str) -> Status {
    super::error::status(
        Code::InvalidArgument,
        INVALID_REQUEST,
        format!("the request message does not decode: {description}"),
        HashMap::new(),
        None,
        vec![],
    )
}

/// The status of a request message of `len` bytes over `limit`.
pub fn too_large(len: u64, limit: usize) -> Status {
    super::error::status(
        Code::ResourceExhausted,
        MESSAGE_TOO_LARGE,
        format!("the request message has {len} bytes; the limit is {limit}"),
        HashMap::from([
            ("limitBytes".to_owned(), limit.to_string()),
            ("messageBytes".to_owned(), len.to_string()),
        ]),
        None,
        vec![],
    )
}

/// prost's codec with [`undecodable`] for messages that do not decode.
pub struct Codec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self {
            inner: ProstCodec::default(),
        }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder {
            inner: self.inner.decoder(),
        }
    }
}

/// The decoder of [`Codec`].
pub struct Decoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: prost::Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // Decoded directly (not through ProstDecoder::decode) to keep prost's description of what was wrong.
        match U::decode(buf) {
            Ok(message) => Ok(Some(message)),
            Err(e) => Err(undecodable(&e.to_string())),
        }
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// Refuses request messages over `limit` bytes with [`too_large`] (see the module docs).
#[derive(Clone)]
pub struct MessageLimit<S> {
    inner: S,
    limit: usize,
}

impl<S> MessageLimit<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limit: usize) -> Self {
        Self { inner, limit }
    }
}

impl<S: NamedService> NamedService for MessageLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for MessageLimit<S>
where
    S: tower::Service<http::Request<LimitedBody<B>>>,
    B: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> S::Future {
        let limit = self.limit;
        self.inner
            .call(request.map(|body| LimitedBody::new(body, limit)))
    }
}

/// A request body that fails with [`too_large`] at the prefix of a message over its limit.
pub struct LimitedBody<B> {
    inner: B,
    limit: usize,
    /// The prefix read so far of the next message.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
    failed: bool,
    _data: PhantomData<fn() -> Bytes>,
}

impl<B> LimitedBody<B> {
    fn new(inner: B, limit: usize) -> Self {
        Self {
            inner,
            limit,
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
            failed: false,
            _data: PhantomData,
        }
    }

    /// Follows the message framing through `data`; a prefix announcing more than the limit is an error.
    fn scan(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let take = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.remaining -= take as u64;
                data = &data[take..];
                continue;
            }
            self.prefix[self.prefix_len] = data[0];
            self.prefix_len += 1;
            data = &data[1..];
            if self.prefix_len == PREFIX {
                self.prefix_len = 0;
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                if u64::from(len) > self.limit as u64 {
                    return Err(too_large(u64::from(len), self.limit));
                }
                self.remaining = u64::from(len);
            }
        }
        Ok(())
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        let frame = frame.map_data(|mut d| d.copy_to_bytes(d.remaining()));
        if let Some(data) = frame.data_ref() {
            if let Err(status) = this.scan(data) {
                this.failed = true;
                return Poll::Ready(Some(Err(Box::new(status))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn the_framing_is_followed_across_chunks() {
        let mut body = LimitedBody::new((), 10);
        // A 3-byte message, then the prefix of an 11-byte one split over two chunks.
        assert!(body.scan(&[0, 0, 0, 0, 3, 1, 2]).is_ok());
        assert!(body.scan(&[3, 0, 0]).is_ok());
        let err = body.scan(&[0, 0, 11]).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        let info = err.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, MESSAGE_TOO_LARGE);
        assert_eq!(info.metadata["limitBytes"], "10");
        assert_eq!(info.metadata["messageBytes"], "11");
        // Exactly at the limit is fine, and its 10 bytes are not read as a prefix.
        let mut body = LimitedBody::new((), 10);
        assert!(body.scan(&[0, 0, 0, 0, 10]).is_ok());
        assert!(body.scan(&[0xff; 10]).is_ok());
        assert!(body.scan(&[0, 0, 0, 0, 1, 7]).is_ok());
    }
}
