// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The guest's kernel-protect state: building the `kernel_asset_info`
//! record from the kernel's section bounds, reporting it in early boot,
//! asking for protection once boot-time patching is over, self-checks,
//! and the text of the sysfs files.

use core::fmt::{self, Write};

use crate::cmdline::Mode;
use crate::guest_kp::abi::{KpError, RegionType, SiteTable, PATCH_SITES, TEXT_PATCH};
use crate::guest_kp::builder::Builder;
use crate::guest_kp::guest::{self, Hypercall, Registered, ReportPath, SelfCheck};
use crate::guest_kp::record::{KernelAssetInfo, RecordError};

/// How often a self-check is asked again while the hypervisor answers
/// BUSY: with the kernel's 1 ms pause, two seconds, the time the
/// hypervisor itself allows its measurement CPU.
pub const BUSY_RETRIES: u32 = 2000;

/// Where kernel protect stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `pvguard=` not given (or `off`).
    NotRequested,
    /// The kernel's own layout could not be described (a bug).
    BadLayout(RecordError),
    /// The hypervisor does not offer kernel protect, or refused the report.
    Unsupported(KpError),
    /// Discovery says the hypervisor has no kernel protect: nothing was
    /// sent.
    NotOffered,
    /// The layout is reported; protection comes after `mark_rodata_ro`.
    Reported(ReportPath),
    /// The hypervisor refused to enable protection.
    Refused(KpError),
    /// Stage-2 protection is enforced.
    Protected,
}

/// Where one table of text-patch sites lies, for PATCH_SITES.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// IPA of the first entry.
    pub ipa: u64,
    /// Number of entries (0: the kernel has no such table).
    pub entries: u64,
}

/// The kernel's tables of text-patch sites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatchTables {
    /// The VA at which TEXT starts (`_stext`).
    pub text_va: u64,
    /// `__jump_table`.
    pub jump_table: Table,
    /// ftrace's trampolines (`ftrace_caller`).
    pub ftrace_callers: Table,
    /// `__mcount_loc`.
    pub mcount_loc: Table,
}

/// What became of one table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TableOutcome {
    /// Not sent (none in this kernel, or kernel protect is not in use).
    #[default]
    NotSent,
    /// The hypervisor accepted it.
    Registered(Registered),
    /// The hypervisor refused it: patches at its sites will be refused.
    Refused(KpError),
}

/// The outcome of registering each table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteTables {
    /// `__jump_table`.
    pub jump_table: TableOutcome,
    /// ftrace's trampolines.
    pub ftrace_callers: TableOutcome,
    /// `__mcount_loc`.
    pub mcount_loc: TableOutcome,
    /// Whether the hypervisor takes batches (TEXT_PATCH).
    pub batches: bool,
}

/// Sends the kernel's tables of text-patch sites (PATCH_SITES), the
/// trampolines before `__mcount_loc`, whose sites the hypervisor checks
/// against them. A hypervisor without PATCH_SITES is sent nothing.
pub fn send_site_tables(hv: &mut dyn Hypercall, tables: &PatchTables) -> SiteTables {
    if !guest::implements(hv, PATCH_SITES) {
        return SiteTables::default();
    }
    let mut send = |kind: SiteTable, t: Table| {
        if t.entries == 0 {
            return TableOutcome::NotSent;
        }
        match guest::register_sites(hv, kind, t.ipa, t.entries, tables.text_va) {
            Ok(r) => TableOutcome::Registered(r),
            Err(e) => TableOutcome::Refused(e),
        }
    };
    let jump_table = send(SiteTable::JumpTable, tables.jump_table);
    let ftrace_callers = send(SiteTable::FtraceCallers, tables.ftrace_callers);
    // Without its trampolines no ftrace site can be checked.
    let mcount_loc = match ftrace_callers {
        TableOutcome::Registered(_) => send(SiteTable::McountLoc, tables.mcount_loc),
        _ => TableOutcome::NotSent,
    };
    SiteTables {
        jump_table,
        ftrace_callers,
        mcount_loc,
        batches: guest::implements(hv, TEXT_PATCH),
    }
}

/// The guest's kernel-protect state.
pub struct KpState {
    mode: Mode,
    status: Status,
    record: KernelAssetInfo,
    last: Option<SelfCheck>,
    checks: u64,
    sites: SiteTables,
    /// The hypervisor's code log at the last self-check, if it keeps one.
    code_log: Option<([u8; 32], u64)>,
    /// The image's other text, as (IPA, size), named at enable.
    other_text: (u64, u64),
}

impl Default for KpState {
    fn default() -> Self {
        Self::new()
    }
}

impl KpState {
    /// Nothing requested yet.
    pub const fn new() -> Self {
        Self {
            mode: Mode::Off,
            status: Status::NotRequested,
            record: KernelAssetInfo::new(),
            last: None,
            checks: 0,
            code_log: None,
            other_text: (0, 0),
            sites: SiteTables {
                jump_table: TableOutcome::NotSent,
                ftrace_callers: TableOutcome::NotSent,
                mcount_loc: TableOutcome::NotSent,
                batches: false,
            },
        }
    }

    /// Registers the kernel's tables of text-patch sites, between the
    /// report and enabling protection: the hypervisor accepts patches
    /// only at registered sites. The trampolines go before
    /// `__mcount_loc`, whose sites the hypervisor checks against them. A
    /// hypervisor without PATCH_SITES is sent nothing.
    pub fn register_sites(&mut self, hv: &mut dyn Hypercall, tables: &PatchTables) -> SiteTables {
        if !self.may_register_sites() {
            return self.sites;
        }
        let sites = send_site_tables(hv, tables);
        self.record_sites(sites);
        sites
    }

    /// Whether the tables are to be sent: the layout is reported and
    /// protection not asked for yet. With [`send_site_tables`] and
    /// [`Self::record_sites`], the steps of [`Self::register_sites`],
    /// for a kernel that must not hold its lock across the calls.
    pub fn may_register_sites(&self) -> bool {
        matches!(self.status, Status::Reported(_))
    }

    /// Records what became of the tables.
    pub fn record_sites(&mut self, sites: SiteTables) {
        self.sites = sites;
    }

    /// The outcome of [`Self::register_sites`].
    pub fn sites(&self) -> SiteTables {
        self.sites
    }

    /// Whether text patches may go to the hypervisor in batches: it is
    /// protecting the kernel, takes TEXT_PATCH, and knows ftrace's sites.
    pub fn batches(&self) -> bool {
        self.status == Status::Protected
            && self.sites.batches
            && matches!(self.sites.mcount_loc, TableOutcome::Registered(_))
    }

    /// The patch-site part of the debugfs report.
    ///
    /// # Errors
    /// Whatever `w` returns.
    pub fn write_sites(&self, w: &mut dyn Write) -> fmt::Result {
        for (name, t) in [
            ("jump_table", self.sites.jump_table),
            ("ftrace_callers", self.sites.ftrace_callers),
            ("mcount_loc", self.sites.mcount_loc),
        ] {
            match t {
                TableOutcome::NotSent => writeln!(w, "{name}=not-sent")?,
                TableOutcome::Registered(r) => writeln!(
                    w,
                    "{name}=registered sites={} skipped={}",
                    r.sites, r.skipped
                )?,
                TableOutcome::Refused(e) => writeln!(w, "{name}=refused {e}")?,
            }
        }
        writeln!(w, "batches={}", if self.batches() { "yes" } else { "no" })
    }

    /// Records the command line's request.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// No KVM-compatible hypervisor answered: say so.
    pub fn give_up(&mut self) {
        if self.mode != Mode::Off {
            self.status = Status::Unsupported(KpError::Unimplemented);
        }
    }

    /// Whether `pvguard=strict` must refuse to boot now.
    pub fn must_refuse_boot(&self) -> bool {
        self.mode == Mode::Strict && !matches!(self.status, Status::Reported(_) | Status::Protected)
    }

    /// Builds the record from the kernel's section bounds and reports it
    /// (compact call, else region by region). `place` stores the record
    /// where the hypervisor can read it and returns its IPA.
    pub fn report(
        &mut self,
        hv: &mut dyn Hypercall,
        layout: &Builder,
        place: impl FnOnce(&KernelAssetInfo) -> u64,
    ) -> Status {
        if self.mode == Mode::Off {
            return self.status;
        }
        self.status = match layout.build() {
            Err(e) => Status::BadLayout(e),
            // Offer nothing the hypervisor did not say it has.
            Ok(_) if !guest::offered(hv) => Status::NotOffered,
            Ok(record) => {
                self.record = record;
                let ipa = place(&record);
                match guest::report(hv, &record, ipa) {
                    Ok(path) => Status::Reported(path),
                    Err(e) => Status::Unsupported(e),
                }
            }
        };
        self.status
    }

    /// Names the image's other text, `[start, end)` as IPAs straight from
    /// the linker symbols (arm64's `.rodata.text`: code the kernel runs
    /// only through other mappings, the idmap and the KPTI trampoline),
    /// for the enable call; widened to whole pages. An empty range names
    /// none.
    pub fn set_other_text(&mut self, start: u64, end: u64) {
        let page = crate::guest_kp::abi::PAGE_SIZE;
        self.other_text = if start < end {
            let first = start & !(page - 1);
            let last = end.div_ceil(page).saturating_mul(page);
            (first, last - first)
        } else {
            (0, 0)
        };
    }

    /// The image's other text as (IPA, size), or (0, 0).
    pub fn other_text(&self) -> (u64, u64) {
        self.other_text
    }

    /// Asks for protection (after `mark_rodata_ro`).
    pub fn enable(&mut self, hv: &mut dyn Hypercall) -> Status {
        if !self.may_enable() {
            return self.status;
        }
        self.record_enable(guest::enable_protection(hv, self.other_text))
    }

    /// Whether protection is to be asked for: the layout is reported and
    /// protection not asked for yet. With [`guest::enable_protection`]
    /// and [`Self::record_enable`], the steps of [`Self::enable`], for a
    /// kernel that must not hold its lock across the call.
    pub fn may_enable(&self) -> bool {
        matches!(self.status, Status::Reported(_))
    }

    /// Records the answer to the enable call.
    pub fn record_enable(&mut self, answer: Result<SelfCheck, KpError>) -> Status {
        self.status = match answer {
            Ok(check) => {
                // The measurement may still be being taken on a CPU of the
                // hypervisor's own (x3 = 0): then there is no verdict to
                // show until the first self-check.
                self.last = (check.measurement != 0).then_some(check);
                Status::Protected
            }
            Err(e) => Status::Refused(e),
        };
        self.status
    }

    /// Runs an integrity self-check (enable_vm_protection on itself).
    /// While the hypervisor is still taking its measurement it answers
    /// BUSY rather than wait with every vCPU held up; the check is asked
    /// again, [`BUSY_RETRIES`] times at most with a pause between.
    ///
    /// A kernel that must not hold its lock across the waits uses the
    /// three steps instead: [`Self::may_self_check`] under the lock,
    /// [`guest::self_check`] without it, [`Self::record_self_check`]
    /// under it again.
    ///
    /// # Errors
    /// The hypervisor's refusal (BUSY if it never became ready), or
    /// OBJECT_STATE if not protected.
    pub fn self_check(&mut self, hv: &mut dyn Hypercall) -> Result<SelfCheck, KpError> {
        self.may_self_check()?;
        let check = guest::self_check(hv, BUSY_RETRIES)?;
        self.record_self_check(check);
        self.record_code_log(crate::guest_kp::mem_perms::read_code_log(hv).ok());
        Ok(check)
    }

    /// Whether a self-check may be asked for: only once protected.
    ///
    /// # Errors
    /// OBJECT_STATE if not protected.
    pub fn may_self_check(&self) -> Result<(), KpError> {
        if self.status == Status::Protected {
            Ok(())
        } else {
            Err(KpError::ObjectState)
        }
    }

    /// Records the answer of a self-check.
    pub fn record_self_check(&mut self, check: SelfCheck) {
        self.checks += 1;
        self.last = Some(check);
    }

    /// Records the hypervisor's code log as read with the self-check
    /// (`mem_perms::read_code_log`): what became executable outside the image,
    /// as the hypervisor logged it (`None` under the `image` code policy,
    /// or from a hypervisor without one).
    pub fn record_code_log(&mut self, log: Option<([u8; 32], u64)>) {
        self.code_log = log;
    }

    /// The text of `state`.
    ///
    /// # Errors
    /// Whatever `w` returns.
    pub fn write_state(&self, w: &mut dyn Write) -> fmt::Result {
        match self.status {
            Status::NotRequested => {
                writeln!(
                    w,
                    "disabled: not requested on the kernel command line (pvguard=on)"
                )
            }
            Status::BadLayout(e) => {
                writeln!(w, "unsupported: the kernel layout is not reportable: {e}")
            }
            Status::Unsupported(e) => {
                writeln!(w, "unsupported: the hypervisor refused the report: {e}")
            }
            Status::NotOffered => {
                writeln!(
                    w,
                    "unsupported: the hypervisor does not offer kernel protect"
                )
            }
            Status::Reported(path) => writeln!(w, "reported ({})", path_name(path)),
            Status::Refused(e) => writeln!(w, "reported; protection refused: {e}"),
            Status::Protected => writeln!(w, "protected"),
        }
    }

    /// The text of `regions`: the regions as reported.
    ///
    /// # Errors
    /// Whatever `w` returns.
    pub fn write_regions(&self, w: &mut dyn Write) -> fmt::Result {
        if self.record.region(RegionType::Text).is_zero() {
            return Ok(());
        }
        for ty in RegionType::ALL {
            let r = self.record.region(ty);
            let end = r.end().unwrap_or(0);
            writeln!(w, "{:<17} {:#018x}-{:#018x}", ty.name(), r.start(), end)?;
        }
        Ok(())
    }

    /// The text of `self_check` in sysfs: the last verdict alone.
    ///
    /// # Errors
    /// Whatever `w` returns.
    pub fn write_verdict(&self, w: &mut dyn Write) -> fmt::Result {
        match self.last {
            None => writeln!(w, "none"),
            Some(c) if c.intact => writeln!(w, "intact"),
            Some(_) => writeln!(w, "MODIFIED"),
        }
    }

    /// The full self-check report (debugfs).
    ///
    /// # Errors
    /// Whatever `w` returns.
    pub fn write_self_check(&self, w: &mut dyn Write) -> fmt::Result {
        match self.last {
            None => writeln!(w, "verdict=none")?,
            Some(c) => {
                writeln!(
                    w,
                    "verdict={}",
                    if c.intact { "intact" } else { "MODIFIED" }
                )?;
                writeln!(w, "measurement={:016x}", c.measurement)?;
                writeln!(w, "patches={}", c.patches)?;
            }
        }
        if let Some((digest, records)) = self.code_log {
            write!(w, "code_log=")?;
            for b in digest {
                write!(w, "{b:02x}")?;
            }
            writeln!(w, "\ncode_log_records={records}")?;
        }
        writeln!(w, "checks={}", self.checks)
    }
}

fn path_name(p: ReportPath) -> &'static str {
    match p {
        ReportPath::Compact => "compact",
        ReportPath::PerRegion => "per-region",
    }
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "kp/tests.rs"]
mod tests;
