//! How a request stream ended: the handle a layer beneath tonic sets when
//! the client cut the stream off, since tonic reads a client's
//! RST_STREAM(CANCEL) as a clean end (see `server::layers::stream_end`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Put into every request's extensions: how its body ended.
#[derive(Clone, Debug, Default)]
pub struct StreamEnd(Arc<AtomicBool>);

impl StreamEnd {
    /// Records that the body failed.
    pub fn cut_off(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once the body failed, e.g. the client reset the stream.
    pub fn was_cut_off(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Reads the handle from a request, if the layer is installed.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<StreamEnd> {
        request.extensions().get::<StreamEnd>().cloned()
    }
}
