//! Protocol frames between agent and aggregator, and their framing on QUIC streams.
//!
//! Each frame is a little-endian `u32` length followed by the postcard encoding of [`Frame`].
//! The agent opens one bidirectional control stream (hello → welcome, then heartbeats one way,
//! acknowledgements and check assignments the other) and one unidirectional stream of batch
//! frames whose payloads share one codec context (see [`crate::codec`]).

use crate::metadata::FamilyMetadata;
use serde::{Deserialize, Serialize};
#[cfg(feature = "io")]
use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol version this build speaks. A peer with another version is refused at hello.
///
/// Version 2 added [`Frame::Metadata`]. Version 3 added [`Frame::RunCheck`] and the agent's
/// liveness promise ([`ALIVE_EVERY_MS`]). Version 4 added [`Hello::acked_seq`], so an
/// aggregator knows which seqs another aggregator took when an agent fails over. Version 5
/// added [`Welcome::alive_every_ms`]: the aggregator says how often it must hear from the
/// agent. Version 6 lets batches on the stream set the codec's in-order, one-timestamp and
/// predicted-length flags ([`COMPACT_VERSION`]), and the aggregator hold acknowledgements
/// (`session::HOLD_ACKS_VERSION`). The version changes whenever a peer of the previous
/// version could not read what this one sends (a new frame variant, a new field).
pub const PROTOCOL_VERSION: u16 = 6;
/// The first protocol version whose aggregator decodes batches with the codec's in-order,
/// one-timestamp and predicted-length flags (`docs/WIRE.md`, batch payload); the agent's
/// stream encoder uses them only on such a connection.
pub const COMPACT_VERSION: u16 = 6;
/// The oldest protocol version this build still speaks. A peer announcing any version from
/// this one to [`PROTOCOL_VERSION`] is accepted; frames newer than the peer's version are
/// never sent to it.
pub const MIN_PROTOCOL_VERSION: u16 = 2;
/// Agents of protocol 3 and 4 send something (a batch, or else a heartbeat) at least this
/// often, ms, as long as they are connected: whatever else was sent in the last interval
/// counts, so while data flows this costs nothing on the wire. The aggregator counts such an
/// agent down when it has heard nothing from it for a few of these intervals. From protocol
/// 5 the welcome sets the interval ([`Welcome::alive_every_ms`]), never below this one.
pub const ALIVE_EVERY_MS: i64 = 1_000;
/// The first protocol version whose welcome carries [`Welcome::alive_every_ms`].
pub const ALIVE_IN_WELCOME_VERSION: u16 = 5;

/// The liveness interval an aggregator that counts an agent down after `down_after_ms` of
/// silence asks for in its welcome: a quarter of it, at least [`ALIVE_EVERY_MS`]. An agent
/// is silent for at most two intervals, so half the threshold is left for the network.
pub fn alive_every_for(down_after_ms: u64) -> u32 {
    (down_after_ms / 4).clamp(ALIVE_EVERY_MS as u64, u32::MAX as u64) as u32
}
/// ALPN token for QUIC connections between agent and aggregator. It names the framing, not
/// the protocol version, and stays `outpost/1`, so that a peer of another version still
/// reaches the hello and gets a clear refusal.
pub const ALPN: &[u8] = b"outpost/1";
/// No frame may be larger than this (a batch of a few million points).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// QUIC application close codes.
pub mod close {
    /// A clean close: nothing went wrong.
    pub const NORMAL: u32 = 0;
    /// The peer speaks another protocol version.
    pub const VERSION_MISMATCH: u32 = 1;
    /// The agent id in the hello differs from the client certificate's common name.
    pub const IDENTITY_MISMATCH: u32 = 2;
    /// A frame or batch that does not decode.
    pub const MALFORMED: u32 = 3;
    /// A newer connection of the same agent took over.
    pub const REPLACED: u32 = 4;
    /// The aggregator is shutting down.
    pub const SHUTDOWN: u32 = 5;
    /// The agent sent nothing for longer than its liveness promise allows (protocol 3): the
    /// aggregator counts it down and closes the connection; a live agent reconnects.
    pub const SILENT: u32 = 6;
}

/// The agent's first frame on the control stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must stay the first field of the first variant: [`peek_hello_version`] reads it
    /// without decoding the rest, so a future layout still gets a clear refusal.
    pub protocol: u16,
    /// The agent's id; must equal its certificate's common name.
    pub agent_id: String,
    /// The region the agent reports from.
    pub region: String,
    /// The agent's build version.
    pub agent_version: String,
    /// The agent's wall clock, ms since the Unix epoch, when it sent the hello.
    pub clock_ms: i64,
    /// The highest seq any aggregator has acknowledged to this agent (protocol 4; 0 from
    /// older agents). Seqs from the receiving aggregator's applied seq up to this one went to
    /// another aggregator of the agent's `endpoints`: they are handed over, not missing.
    /// Must stay the last field: a protocol 3 hello is this struct without it.
    pub acked_seq: u64,
}

/// A hello of protocol 3 and older: [`Hello`] without `acked_seq`.
#[derive(Deserialize)]
struct HelloV3 {
    protocol: u16,
    agent_id: String,
    region: String,
    agent_version: String,
    clock_ms: i64,
}

/// The aggregator's answer to an accepted hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The aggregator's protocol version.
    pub protocol: u16,
    /// The aggregator's build version.
    pub aggregator_version: String,
    /// The aggregator's wall clock, ms since the Unix epoch, when it sent the welcome.
    pub clock_ms: i64,
    /// The highest batch seq the aggregator has durably applied for this agent.
    pub applied_seq: u64,
    /// How often the aggregator must hear from the agent, ms (protocol 5): the agent is never
    /// silent for more than two such intervals (it sends a heartbeat after one and a half
    /// intervals without a send). A welcome of
    /// protocol 4 and older is this struct without the field; it decodes with
    /// [`ALIVE_EVERY_MS`], and [`encode`] leaves the field out of a welcome whose `protocol`
    /// is older than [`ALIVE_IN_WELCOME_VERSION`]. Must stay the last field.
    pub alive_every_ms: u32,
}

/// A welcome of protocol 4 and older: [`Welcome`] without `alive_every_ms`.
#[derive(Serialize, Deserialize)]
struct WelcomeV4 {
    protocol: u16,
    aggregator_version: String,
    clock_ms: i64,
    applied_seq: u64,
}

/// The index of [`Frame::Welcome`] in postcard's encoding of [`Frame`].
const WELCOME_VARIANT: u8 = 1;

/// The agent's periodic report on the control stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The agent's wall clock, ms since the Unix epoch.
    pub clock_ms: i64,
    /// Samples the agent's buffer has dropped by policy since it was created.
    pub dropped_samples: u64,
    /// Bytes waiting in the agent's buffer.
    pub backlog_bytes: u64,
}

/// A W3C trace context (the `traceparent` fields) carried with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// The trace's id.
    pub trace_id: [u8; 16],
    /// The sending span's id.
    pub span_id: [u8; 8],
    /// W3C trace flags; bit 0 is "sampled".
    pub flags: u8,
}

/// Everything agent and aggregator say to each other (postcard-encoded, length-prefixed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Agent → aggregator, first: who is connecting.
    Hello(Hello),
    /// Aggregator → agent: accepted, and where to resume.
    Welcome(Welcome),
    /// Sent before closing: why the peer is not accepted.
    Refused {
        /// Human-readable, names the problem.
        reason: String,
    },
    /// One buffered batch.
    Batch {
        /// The batch's place in the agent's sequence.
        seq: u64,
        /// The batch, encoded with [`crate::codec`].
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        /// The sender's tracing span for this batch, when it exports traces; the receiver
        /// continues the trace from it.
        trace: Option<TraceContext>,
    },
    /// Every batch up to and including `seq` is durable at the aggregator.
    Ack {
        /// The highest durable seq.
        seq: u64,
    },
    /// Agent → aggregator: clock, drops and backlog.
    Heartbeat(Heartbeat),
    /// Aggregator to agent, on the control stream: the synthetic checks this agent runs from
    /// now on, as a JSON array of check definitions. Each one replaces the previous set.
    Checks {
        /// The definitions, a JSON array.
        json: String,
    },
    /// Agent to aggregator, on the control stream: the metadata (type, help, unit) of metric
    /// families first seen, or changed, since the last metadata frame on this connection;
    /// after a welcome, every family the agent knows. At most
    /// [`crate::metadata::MAX_FAMILIES_PER_FRAME`] families per frame.
    Metadata {
        /// One entry per family, each name once.
        families: Vec<FamilyMetadata>,
    },
    /// Aggregator to agent, on the control stream (protocol 3 and later): run this check
    /// once, now, whether or not it is among the agent's checks, and record its result like
    /// any other (with this agent's `agent` and `region` labels). The aggregator uses it to
    /// re-run a failure from another agent before counting it.
    RunCheck {
        /// One check definition as a JSON object.
        json: String,
    },
}

impl Frame {
    /// The frame's kind in one word, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Welcome(_) => "welcome",
            Frame::Refused { .. } => "refused",
            Frame::Batch { .. } => "batch",
            Frame::Ack { .. } => "ack",
            Frame::Heartbeat(_) => "heartbeat",
            Frame::Checks { .. } => "checks",
            Frame::Metadata { .. } => "metadata",
            Frame::RunCheck { .. } => "run-check",
        }
    }
}

/// Why a frame cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    /// The body does not decode as a frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The stream failed.
    #[error("stream read failed: {0}")]
    Io(std::io::Error),
}

/// Length prefix and body, ready to write to a stream. A welcome of a protocol older than
/// [`ALIVE_IN_WELCOME_VERSION`] is written in that protocol's layout, without
/// [`Welcome::alive_every_ms`].
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    // Serializing owned data into a Vec cannot fail.
    out = match frame {
        Frame::Welcome(w) if w.protocol < ALIVE_IN_WELCOME_VERSION => {
            out.push(WELCOME_VARIANT);
            let old = WelcomeV4 {
                protocol: w.protocol,
                aggregator_version: w.aggregator_version.clone(),
                clock_ms: w.clock_ms,
                applied_seq: w.applied_seq,
            };
            postcard::to_extend(&old, out).unwrap_or_default()
        }
        f => postcard::to_extend(f, out).unwrap_or_default(),
    };
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out
}

/// Decodes one frame body (without its length prefix). A hello of protocol 3 or older
/// (without [`Hello::acked_seq`]) decodes with `acked_seq` 0, a welcome of protocol 4 or
/// older (without [`Welcome::alive_every_ms`]) with [`ALIVE_EVERY_MS`].
pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
    postcard::from_bytes(body).or_else(|e| match body {
        [WELCOME_VARIANT, rest @ ..] => postcard::from_bytes::<WelcomeV4>(rest)
            .ok()
            .filter(|w| w.protocol < ALIVE_IN_WELCOME_VERSION)
            .map(|w| {
                Frame::Welcome(Welcome {
                    protocol: w.protocol,
                    aggregator_version: w.aggregator_version,
                    clock_ms: w.clock_ms,
                    applied_seq: w.applied_seq,
                    alive_every_ms: ALIVE_EVERY_MS as u32,
                })
            })
            .ok_or_else(|| FrameError::Malformed(e.to_string())),
        _ => decode_old_hello(body, e),
    })
}

/// A hello of protocol 3 or older, after the current layout did not decode (`e`).
fn decode_old_hello(body: &[u8], e: postcard::Error) -> Result<Frame, FrameError> {
    match peek_hello_version(body) {
        Some(v) if v < 4 => postcard::from_bytes::<HelloV3>(&body[1..])
            .map(|h| {
                Frame::Hello(Hello {
                    protocol: h.protocol,
                    agent_id: h.agent_id,
                    region: h.region,
                    agent_version: h.agent_version,
                    clock_ms: h.clock_ms,
                    acked_seq: 0,
                })
            })
            .map_err(|e| FrameError::Malformed(e.to_string())),
        _ => Err(FrameError::Malformed(e.to_string())),
    }
}

/// The protocol version of a hello frame's body, read without decoding the rest.
pub fn peek_hello_version(body: &[u8]) -> Option<u16> {
    match body {
        [0, rest @ ..] => postcard::take_from_bytes::<u16>(rest).ok().map(|(v, _)| v),
        _ => None,
    }
}

/// Checks a peer's version against the ones this build speaks ([`MIN_PROTOCOL_VERSION`] to
/// [`PROTOCOL_VERSION`]); the error text is sent to the agent and logged. Its wording
/// ("this build speaks vN") is what [`spoken_version`] reads back.
pub fn check_version(theirs: u16) -> Result<(), String> {
    if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&theirs) {
        Ok(())
    } else {
        Err(format!(
            "protocol version mismatch: peer speaks v{theirs}, this build speaks v{PROTOCOL_VERSION}; upgrade the older side"
        ))
    }
}

/// The version a refusing peer says it speaks, read from a version-mismatch refusal
/// ([`check_version`]'s text, the same in every version since 1); `None` for other reasons.
pub fn spoken_version(reason: &str) -> Option<u16> {
    let rest = reason
        .strip_prefix("protocol version mismatch: ")?
        .split("this build speaks v")
        .nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Reads one frame body. `Ok(None)` is a clean end of stream between frames. (Feature
/// `io`: the only part of this crate that needs an async runtime's traits.)
#[cfg(feature = "io")]
pub async fn read_body<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await.map_err(FrameError::Io)?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(Some(body))
}

/// Reads and decodes one frame. `Ok(None)` is a clean end of stream between frames.
/// (Feature `io`.)
#[cfg(feature = "io")]
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, FrameError> {
    match read_body(r).await? {
        Some(b) => decode(&b).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello(protocol: u16) -> Frame {
        Frame::Hello(Hello {
            protocol,
            agent_id: "web-1".into(),
            region: "eu".into(),
            agent_version: "0.1.0".into(),
            clock_ms: 1_700_000_000_123,
            acked_seq: 0,
        })
    }

    #[test]
    fn a_protocol_3_hello_decodes_without_acked_seq() {
        #[derive(Serialize)]
        enum OldFrame {
            Hello {
                protocol: u16,
                agent_id: String,
                region: String,
                agent_version: String,
                clock_ms: i64,
            },
        }
        let old = postcard::to_allocvec(&OldFrame::Hello {
            protocol: 3,
            agent_id: "web-1".into(),
            region: "eu".into(),
            agent_version: "0.1.0".into(),
            clock_ms: 1_700_000_000_123,
        })
        .unwrap();
        assert_eq!(decode(&old).unwrap(), hello(3));
        // A protocol 4 hello keeps its acked seq; a truncated one is still malformed.
        let mut h = hello(4);
        if let Frame::Hello(x) = &mut h {
            x.acked_seq = 77;
        }
        let bytes = encode(&h);
        assert_eq!(decode(&bytes[4..]).unwrap(), h);
        assert!(decode(&bytes[4..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_welcome_older_than_protocol_5_keeps_its_layout_both_ways() {
        #[derive(Serialize)]
        enum OldFrame {
            #[allow(dead_code)]
            Hello,
            Welcome {
                protocol: u16,
                aggregator_version: String,
                clock_ms: i64,
                applied_seq: u64,
            },
        }
        let welcome = |protocol, alive_every_ms| Welcome {
            protocol,
            aggregator_version: "0.1.0".into(),
            clock_ms: 1_700_000_000_123,
            applied_seq: 41,
            alive_every_ms,
        };
        for protocol in 2..ALIVE_IN_WELCOME_VERSION {
            let old = postcard::to_allocvec(&OldFrame::Welcome {
                protocol,
                aggregator_version: "0.1.0".into(),
                clock_ms: 1_700_000_000_123,
                applied_seq: 41,
            })
            .unwrap();
            // An older aggregator's welcome means the fixed interval.
            let w = Frame::Welcome(welcome(protocol, ALIVE_EVERY_MS as u32));
            assert_eq!(decode(&old).unwrap(), w);
            // Welcoming an older agent writes exactly what it expects, whatever interval
            // the aggregator would have asked a v5 agent for.
            assert_eq!(
                &encode(&Frame::Welcome(welcome(protocol, 7_500)))[4..],
                &old[..]
            );
        }
        let w = Frame::Welcome(welcome(PROTOCOL_VERSION, 7_500));
        let bytes = encode(&w);
        assert_eq!(decode(&bytes[4..]).unwrap(), w);
        // A v5 welcome without its interval is malformed, as is any cut.
        let old = encode(&Frame::Welcome(welcome(4, 0)));
        let mut v5_without = old[4..].to_vec();
        v5_without[1] = PROTOCOL_VERSION as u8;
        assert!(matches!(decode(&v5_without), Err(FrameError::Malformed(_))));
        for cut in 0..bytes.len() - 4 {
            assert!(decode(&bytes[4..4 + cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn the_alive_interval_is_a_quarter_of_the_down_threshold_and_at_least_a_second() {
        assert_eq!(alive_every_for(30_000), 7_500);
        assert_eq!(alive_every_for(8_000), 2_000);
        assert_eq!(alive_every_for(4_000), 1_000);
        assert_eq!(alive_every_for(3_000), 1_000);
        assert_eq!(alive_every_for(0), 1_000);
        assert_eq!(alive_every_for(u64::MAX), u32::MAX);
    }

    #[test]
    fn hello_version_is_readable_without_full_decode() {
        let bytes = encode(&hello(7));
        assert_eq!(peek_hello_version(&bytes[4..]), Some(7));
        assert_eq!(
            peek_hello_version(&encode(&Frame::Ack { seq: 1 })[4..]),
            None
        );
        assert!(check_version(7).unwrap_err().contains("peer speaks v7"));
        assert!(check_version(PROTOCOL_VERSION).is_ok());
        assert!(check_version(MIN_PROTOCOL_VERSION).is_ok());
        assert!(check_version(MIN_PROTOCOL_VERSION - 1).is_err());
        assert_eq!(
            spoken_version(&check_version(9).unwrap_err()),
            Some(PROTOCOL_VERSION)
        );
        assert_eq!(
            spoken_version(
                "protocol version mismatch: peer speaks v3, this build speaks v2; upgrade the older side"
            ),
            Some(2)
        );
        assert_eq!(spoken_version("hello claims agent id"), None);
    }

    #[test]
    fn frames_round_trip_through_a_stream() {
        let frames = vec![
            hello(PROTOCOL_VERSION),
            Frame::Batch {
                seq: 42,
                payload: vec![1, 2, 3],
                trace: None,
            },
            Frame::Batch {
                seq: 43,
                payload: vec![4],
                trace: Some(TraceContext {
                    trace_id: [0xab; 16],
                    span_id: [7, 6, 5, 4, 3, 2, 1, 0],
                    flags: 1,
                }),
            },
            Frame::Ack { seq: 42 },
            Frame::Heartbeat(Heartbeat {
                clock_ms: -5,
                dropped_samples: 3,
                backlog_bytes: 9,
            }),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(encode(f));
        }
        let rt = tokio_test_runtime();
        let got = rt.block_on(async {
            let mut r = &wire[..];
            let mut got = vec![];
            while let Some(f) = read(&mut r).await.unwrap() {
                got.push(f);
            }
            got
        });
        assert_eq!(got, frames);
    }

    #[test]
    fn trace_context_costs_one_byte_when_absent() {
        let plain = encode(&Frame::Batch {
            seq: 1,
            payload: vec![9; 10],
            trace: None,
        });
        let tc = TraceContext {
            trace_id: [1; 16],
            span_id: [2; 8],
            flags: 1,
        };
        let traced = encode(&Frame::Batch {
            seq: 1,
            payload: vec![9; 10],
            trace: Some(tc),
        });
        assert_eq!(traced.len(), plain.len() + 25);
        assert_eq!(
            decode(&traced[4..]).unwrap(),
            Frame::Batch {
                seq: 1,
                payload: vec![9; 10],
                trace: Some(tc)
            }
        );
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let rt = tokio_test_runtime();
        let huge = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes();
        assert!(matches!(
            rt.block_on(read(&mut &huge[..])),
            Err(FrameError::TooLarge(_))
        ));
        let bytes = encode(&Frame::Ack { seq: 9 });
        assert!(matches!(
            rt.block_on(read(&mut &bytes[..bytes.len() - 1])),
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            rt.block_on(read(&mut &bytes[..2])),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn metadata_frames_round_trip_and_bad_ones_are_malformed() {
        use crate::metadata::{FamilyMetadata, Metadata, MetricType};
        let f = Frame::Metadata {
            families: vec![
                FamilyMetadata {
                    family: "node_cpu_seconds_total".into(),
                    meta: Metadata::new(
                        MetricType::Counter,
                        "Seconds the CPUs spent in each mode.",
                    ),
                },
                FamilyMetadata {
                    family: "http_request_duration".into(),
                    meta: Metadata {
                        kind: MetricType::Histogram,
                        help: "Latency \"quoted\"\nsecond line".into(),
                        unit: "seconds".into(),
                    },
                },
            ],
        };
        let bytes = encode(&f);
        assert_eq!(decode(&bytes[4..]).unwrap(), f);
        assert_eq!(f.kind(), "metadata");
        // Compact: the variant, the count, and per family its strings and a type byte.
        let strings: usize = 22 + 36 + 21 + 31 + 7;
        assert!(
            bytes.len() <= 4 + 2 + strings + 5 * 2 + 2,
            "{} bytes",
            bytes.len()
        );
        // Every strict prefix of the body is malformed, never a panic or a shorter frame.
        for cut in 0..bytes.len() - 4 {
            assert!(
                matches!(decode(&bytes[4..4 + cut]), Err(FrameError::Malformed(_))),
                "cut at {cut}"
            );
        }
        // An unknown metric type (index 8) and a name that is not UTF-8.
        let mut body = bytes[4..].to_vec();
        let type_at = 2 + 1 + 22;
        assert_eq!(body[type_at], 0, "counter is type 0");
        body[type_at] = 8;
        assert!(matches!(decode(&body), Err(FrameError::Malformed(_))));
        let mut body = bytes[4..].to_vec();
        body[3] = 0xff;
        assert!(matches!(decode(&body), Err(FrameError::Malformed(_))));
        // An unknown frame variant, as a newer peer might send.
        assert!(matches!(decode(&[42, 0]), Err(FrameError::Malformed(_))));
    }

    /// A minimal executor: the readers here never wait on anything but an in-memory slice.
    fn tokio_test_runtime() -> MiniRt {
        MiniRt
    }
    struct MiniRt;
    impl MiniRt {
        fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
            use std::task::{Context, Poll, Waker};
            let mut f = std::pin::pin!(f);
            let mut cx = Context::from_waker(Waker::noop());
            loop {
                if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                    return v;
                }
            }
        }
    }

    proptest! {
        #[test]
        fn random_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&body);
            let _ = peek_hello_version(&body);
        }
    }
}
