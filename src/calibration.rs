//! The cost of one table read on this machine, for the compile report's latency: measured
//! per parameter set, and cached for an hour in the user's cache folder (machines of one
//! kind drift by up to 2x from day to day, and by tens of percent within hours: a figure
//! cached for a day predicted 0.71 of what `hecnn bench` measured later that day).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use hecnn_compile::params::{CostSource, ParameterSetName, PbsCost};
use hecnn_model::io::{read_limited, write_atomic};
use hecnn_runtime::calibrate::calibrate;
use serde::{Deserialize, Serialize};

use crate::progress::spinner;

/// How long a measured cost is reused by `hecnn compile`.
pub const CACHE_LIFE: Duration = Duration::from_secs(3600);
/// Largest cache file read.
const MAX_CACHE_BYTES: u64 = 1 << 20;

/// The cache file: one entry per machine and set.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    machine: String,
    set: String,
    ms_per_pbs: f64,
    measured_unix_s: u64,
}

/// Where a calibrated cost came from.
pub enum Origin {
    /// Measured now, with this many reads.
    Measured { reads: usize },
    /// Read from the cache, measured this long ago.
    Cached { age: Duration },
}

/// This machine, as far as a PBS's cost goes: its CPU model and core count.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{model} x{}", rayon::current_num_threads())
}

fn cache_path() -> Option<PathBuf> {
    dirs::cache_dir().map(|dir| dir.join("hecnn").join("pbs-costs.json"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The cost of one PBS of `set` on this machine with every core busy: from the cache if
/// measured less than `max_age` ago (at most [`CACHE_LIFE`]), else measured now (seconds:
/// keys of the set, then two seconds of reads) and cached. An unreadable cache is
/// measured over, never an error.
pub fn pbs_cost(set: ParameterSetName, max_age: Duration) -> Result<(PbsCost, Origin)> {
    let machine = machine();
    let set_name = set.to_string();
    let path = cache_path();
    let mut cache: Cache = path
        .as_deref()
        .and_then(|path| read_limited(path, MAX_CACHE_BYTES).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let now = now();
    cache
        .entries
        .retain(|e| now.saturating_sub(e.measured_unix_s) < CACHE_LIFE.as_secs());
    if let Some(entry) = cache.entries.iter().find(|e| {
        e.machine == machine
            && e.set == set_name
            && now.saturating_sub(e.measured_unix_s) < max_age.as_secs()
    }) {
        let cost = PbsCost {
            ms: entry.ms_per_pbs,
            source: CostSource::Calibrated,
        };
        let age = Duration::from_secs(now.saturating_sub(entry.measured_unix_s));
        return Ok((cost, Origin::Cached { age }));
    }
    let bar = spinner(&format!(
        "calibrating: timing table reads of {set} on this machine"
    ));
    let calibration = calibrate(&set.set());
    bar.finish_and_clear();
    cache
        .entries
        .retain(|e| e.machine != machine || e.set != set_name);
    cache.entries.push(Entry {
        machine,
        set: set_name,
        ms_per_pbs: calibration.cost.ms,
        measured_unix_s: now,
    });
    if let Some(path) = path {
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                let json = serde_json::to_vec_pretty(&cache).expect("the cache serialises");
                write_atomic(&path, &json).map_err(anyhow::Error::from)
            });
        if let Err(e) = written {
            eprintln!(
                "warning: the calibration is not cached ({}): {e}",
                path.display()
            );
        }
    }
    Ok((
        calibration.cost,
        Origin::Measured {
            reads: calibration.reads,
        },
    ))
}
