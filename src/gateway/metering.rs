//! The response body on its way back: counts bytes, records the query's duration when it
//! ends, and holds the connection's concurrency slot until then.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::limits::Admission;
use crate::domain::usage::UsageTicket;

/// The gateway's totals, registered once: a lookup per request would cost more than the
/// increment. Totals only, never per connection: a series per connection is unbounded
/// cardinality for Prometheus.
#[derive(Clone)]
pub struct Meters {
    pub queries: metrics::Counter,
    response_bytes: metrics::Counter,
    duration: metrics::Histogram,
}

impl Meters {
    pub fn register() -> Self {
        Self {
            queries: metrics::counter!("switchboard_gateway_queries_total"),
            response_bytes: metrics::counter!("switchboard_gateway_response_bytes_total"),
            duration: metrics::histogram!("switchboard_gateway_query_duration_seconds"),
        }
    }
}

pub struct MeteredBody<B> {
    inner: B,
    admission: Option<Admission>,
    meters: Meters,
    started: Instant,
    bytes: u64,
    /// The query's use of its connection, counted when the body ends.
    usage: Option<UsageTicket>,
}

impl<B> MeteredBody<B> {
    pub fn new(
        inner: B,
        admission: Admission,
        meters: Meters,
        started: Instant,
        usage: UsageTicket,
    ) -> Self {
        Self {
            inner,
            admission: Some(admission),
            meters,
            started,
            bytes: 0,
            usage: Some(usage),
        }
    }

    fn finish(&mut self) {
        // Once: the end of the stream and the drop that follows both land here.
        if self.admission.take().is_some() {
            self.meters.response_bytes.increment(self.bytes);
            if let Some(mut usage) = self.usage.take() {
                usage.add_response_bytes(self.bytes);
            }
            self.meters
                .duration
                .record(self.started.elapsed().as_secs_f64());
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for MeteredBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        self.finish();
    }
}
