//! Per-endpoint mutable state beside the snapshot: requests in flight (for
//! `least-request`) and passive health (outlier detection, as Envoy does it).
//!
//! Only Services that need it carry it: those with `pobox.io/lb-policy:
//! least-request` or with outlier detection turned on by the annotation
//! `pobox.io/outlier-consecutive-failures`. An endpoint's state is one shared
//! object: a rebuilt snapshot hands the same object to an endpoint that stays,
//! so counts and ejections survive updates, and a request that began on an
//! older snapshot ends on the same counter.
//!
//! Outlier detection: `consecutive_failures` failures in a row eject an
//! endpoint for `base_ejection` × the number of times it has been ejected
//! (capped at 300 s, Envoy's default maximum); a success resets the run. At
//! most `max_ejection_percent` of a port's endpoints are ejected at once (at
//! least one may always be); when fewer than `panic_threshold` percent of the
//! candidates are healthy, ejections are ignored (Envoy's panic threshold).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The annotation that turns outlier detection on: failures in a row that
/// eject an endpoint (1..=1000).
pub const ANNOTATION_OUTLIER_FAILURES: &str = "pobox.io/outlier-consecutive-failures";
/// The annotation for the base ejection time in seconds (default 30).
pub const ANNOTATION_OUTLIER_BASE_EJECTION: &str = "pobox.io/outlier-base-ejection-seconds";
/// The annotation for the most endpoints ejected at once, in percent (default 10).
pub const ANNOTATION_OUTLIER_MAX_PERCENT: &str = "pobox.io/outlier-max-ejection-percent";
/// The annotation for the panic threshold in percent (default 50).
pub const ANNOTATION_OUTLIER_PANIC_PERCENT: &str = "pobox.io/outlier-panic-threshold-percent";

const MAX_EJECTION: Duration = Duration::from_secs(300);

/// What a caller saw of a request to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It worked.
    Success,
    /// Connection refused, timed out, reset, or a 5xx: counts toward ejection.
    Failure,
}

/// Outlier detection settings of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutlierDetection {
    /// Failures in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// The first ejection's length; each further ejection adds as much.
    pub base_ejection: Duration,
    /// The most endpoints ejected at once, in percent of the port's endpoints.
    pub max_ejection_percent: u32,
    /// Below this share of healthy candidates, ejections are ignored.
    pub panic_threshold_percent: u32,
}

/// The state of one endpoint of one service port.
#[derive(Debug, Default)]
pub(crate) struct Health {
    in_flight: AtomicU32,
    failures: AtomicU32,
    ejections: AtomicU32,
    /// Clock time (ns) until which the endpoint is ejected; 0 when not.
    ejected_until: AtomicU64,
}

impl Health {
    #[inline]
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn end(&self) {
        // Never below zero, even if a host ends a request twice.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    #[inline]
    pub(crate) fn is_ejected(&self, now: Duration) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && (now.as_nanos() as u64) < until
    }

    /// Records an outcome; returns whether this failure crossed the
    /// threshold (the caller decides if the ejection is allowed).
    pub(crate) fn record(&self, outcome: Outcome, threshold: u32) -> bool {
        match outcome {
            Outcome::Success => {
                self.failures.store(0, Ordering::Relaxed);
                false
            }
            Outcome::Failure => self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= threshold,
        }
    }

    pub(crate) fn eject(&self, now: Duration, base: Duration) -> Duration {
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = (base * n).min(MAX_EJECTION);
        self.ejected_until
            .store(((now + length).as_nanos() as u64).max(1), Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        length
    }
}
