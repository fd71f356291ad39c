//! [`FaultHandle`]: the library face of `/_sandbox/faults`.

use std::sync::Arc;
use std::time::Duration;

use super::{
    FailRule, FaultSettings, Faults, FaultsView, RateLimit, UserGuidingBlock, check_fraction,
};
use crate::state::Shared;
use crate::{SandboxError, Vendor};

/// Injects and clears faults at runtime: the library face of `/_sandbox/faults`.
#[derive(Clone, Debug)]
pub struct FaultHandle {
    shared: Arc<Shared>,
}

impl FaultHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> FaultHandle {
        FaultHandle { shared }
    }

    fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Token-bucket limit for one vendor, e.g. `"50/s"`, `"600/min"`, `"10/s,burst=1"`.
    pub fn rate_limit(&self, vendor: Vendor, rate: &str) -> Result<(), SandboxError> {
        let r = RateLimit::parse(rate)?;
        self.set_rate_limit(vendor, Some(r));
        Ok(())
    }

    /// Sets or clears one vendor's limit.
    pub fn set_rate_limit(&self, vendor: Vendor, limit: Option<RateLimit>) {
        self.faults()
            .update(|s| s.vendor_mut(vendor).rate_limit = limit);
    }

    /// UserGuiding's block rule (`None` turns it off).
    pub fn userguiding_block(&self, block: Option<UserGuidingBlock>) {
        self.faults().update(|s| s.userguiding_block = block);
    }

    /// Fraction of 500/503 answers; `None` = every vendor.
    pub fn error_rate(&self, vendor: Option<Vendor>, rate: f64) -> Result<(), SandboxError> {
        check_fraction("error_rate", rate)?;
        self.faults()
            .update(|s| s.for_each(vendor, |f| f.error_rate = rate));
        Ok(())
    }

    /// Fraction of dropped connections; `None` = every vendor.
    pub fn drop_rate(&self, vendor: Option<Vendor>, rate: f64) -> Result<(), SandboxError> {
        check_fraction("drop_rate", rate)?;
        self.faults()
            .update(|s| s.for_each(vendor, |f| f.drop_rate = rate));
        Ok(())
    }

    /// Fraction of requests applied and then answered 500/503 or dropped; `None` = every
    /// vendor.
    pub fn apply_then_fail_rate(
        &self,
        vendor: Option<Vendor>,
        rate: f64,
    ) -> Result<(), SandboxError> {
        check_fraction("apply_then_fail_rate", rate)?;
        self.faults()
            .update(|s| s.for_each(vendor, |f| f.apply_then_fail_rate = rate));
        Ok(())
    }

    /// Added latency; `None` = every vendor.
    pub fn latency(&self, vendor: Option<Vendor>, latency: Duration) {
        let ms = latency.as_millis() as u64;
        self.faults()
            .update(|s| s.for_each(vendor, |f| f.latency_ms = ms));
    }

    /// Adds a "fail the next N requests to path P" rule.
    pub fn fail_next(&self, rule: FailRule) {
        self.faults().update(|s| s.fail_next.push(rule));
    }

    /// Makes bulk jobs fail (or stop failing).
    pub fn fail_jobs(&self, on: bool) {
        self.faults().update(|s| s.fail_jobs = on);
    }

    /// Each vendor's documented limits at once.
    pub fn realistic_limits(&self) {
        self.faults().update(FaultSettings::apply_realistic);
    }

    /// Replaces every fault setting.
    pub fn set(&self, settings: FaultSettings) -> Result<(), SandboxError> {
        settings.validate()?;
        self.faults().update(|s| *s = settings);
        Ok(())
    }

    /// No faults at all.
    pub fn clear(&self) {
        self.faults().update(|s| *s = FaultSettings::default());
    }

    /// The current settings (pending `fail_next` counts included).
    pub fn view(&self) -> FaultsView {
        self.faults().settings()
    }
}
