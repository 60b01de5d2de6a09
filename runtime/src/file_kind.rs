//! What a runtime file holds, and the format version of all of them.

use std::fmt;

/// Version of the envelope and of every payload this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// What a runtime file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// The client's secret key.
    ClientKey,
    /// The server's evaluation key (compressed).
    EvaluationKey,
    /// Encrypted images.
    Query,
    /// Encrypted logits.
    Result,
}

impl FileKind {
    /// Every kind.
    pub const ALL: [Self; 4] = [
        Self::ClientKey,
        Self::EvaluationKey,
        Self::Query,
        Self::Result,
    ];

    /// The first bytes of a file of this kind.
    pub fn magic(self) -> &'static [u8; 8] {
        match self {
            Self::ClientKey => b"HECNNCKY",
            Self::EvaluationKey => b"HECNNEVK",
            Self::Query => b"HECNNQRY",
            Self::Result => b"HECNNRES",
        }
    }

    /// Largest file of this kind accepted: evaluation keys of the largest sets (`N =
    /// 8192`) are a few hundred MB; the rest is far smaller.
    pub fn size_limit(self) -> u64 {
        match self {
            Self::ClientKey => 64 << 20,
            Self::EvaluationKey => 2 << 30,
            Self::Query | Self::Result => 1 << 30,
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClientKey => "client key",
            Self::EvaluationKey => "evaluation key",
            Self::Query => "query",
            Self::Result => "result",
        })
    }
}
