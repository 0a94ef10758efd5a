//! The appender (Prometheus' word for it): where scraped and pushed samples enter the agent's pipeline: one batch is encoded, put in
//! the durable buffer (same ledger and when-full policy as the collection cycles), counted,
//! and the uplink is woken. Blocking (a RocksDB write): call it from a blocking task.

use crate::buffer::{Buffer, BufferError};
use crate::metadata::MetadataRegistry;
use crate::metrics::{Metrics, SourceLabel};
use outpost_shared::Batch;
use outpost_shared::codec::Encoder;
use std::sync::Arc;
use tokio::sync::Notify;

/// Where a batch came from, for the agent's own metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Scrape,
    PushText,
    PushOtlp,
    Check,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Scrape => "scrape",
            Source::PushText => "push_text",
            Source::PushOtlp => "push_otlp",
            Source::Check => "check",
        }
    }
}

/// What happened to a batch handed to [`Appender::store`].
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// In the buffer under this seq.
    Seq(u64),
    /// The buffer is full and its when-full policy dropped this batch (counted as dropped).
    Dropped,
    /// The batch had no samples; nothing was written.
    Empty,
}

#[derive(Clone)]
pub struct Appender {
    pub buffer: Arc<Buffer>,
    pub metrics: Arc<Metrics>,
    pub new_data: Arc<Notify>,
    /// Where sources record the metadata their families declare.
    pub metadata: Arc<MetadataRegistry>,
    /// This agent's `agent` and `region` labels.
    pub agent: String,
    pub region: String,
}

impl Appender {
    /// The labels every sample of this agent carries, as target labels.
    pub fn agent_labels(&self) -> [(String, String); 2] {
        [
            ("agent".to_string(), self.agent.clone()),
            ("region".to_string(), self.region.clone()),
        ]
    }

    /// Encodes and buffers `batch`, then wakes the uplink. Empty batches are not stored.
    pub fn store(&self, batch: &Batch, source: Source) -> Result<Stored, BufferError> {
        let samples = batch.sample_count() as u64;
        if samples == 0 {
            return Ok(Stored::Empty);
        }
        let oldest = batch
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.ts))
            .min()
            .unwrap_or(0);
        let payload = Encoder::new().encode(batch);
        let r = self.buffer.append_batch(&payload, samples, oldest);
        self.metrics
            .observe_buffer(&self.buffer.stats(), outpost_service::now_ms());
        match r {
            Ok(Some(seq)) => {
                self.metrics
                    .samples_received
                    .get_or_create(&SourceLabel {
                        source: source.as_str().into(),
                    })
                    .inc_by(samples);
                self.new_data.notify_one();
                Ok(Stored::Seq(seq))
            }
            Ok(None) => Ok(Stored::Dropped),
            Err(e) => {
                self.metrics.buffer_write_errors.inc();
                Err(e)
            }
        }
    }
}
