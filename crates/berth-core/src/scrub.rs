//! Scrub: reads every stored object back, re-hashes it, and reports any
//! whose bytes no longer match their digest or size, any that is missing,
//! and metadata that points at content that is not stored. It changes
//! nothing; what to do about a finding is the operator's call.

use berth_oci::Digest;
use berth_storage::StorageError;
use futures_util::StreamExt;
use serde::Serialize;

use crate::registry::Registry;
use crate::Result;

const PAGE: i64 = 200;
/// Findings listed per kind; the counts go on.
const LISTED: usize = 1000;

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ScrubReport {
    pub objects_checked: u64,
    pub bytes_checked: u64,
    /// Objects whose bytes hash to another digest, or have another size.
    pub corrupt: Vec<String>,
    pub corrupt_count: u64,
    /// Objects with a row but no bytes.
    pub missing: Vec<String>,
    pub missing_count: u64,
    /// Metadata pointing at content that has no row.
    pub dangling: Vec<String>,
    pub finished: bool,
}

impl ScrubReport {
    pub fn clean(&self) -> bool {
        self.corrupt_count == 0 && self.missing_count == 0 && self.dangling.is_empty()
    }
}

/// People's summary of a report.
pub fn summary(r: &ScrubReport) -> String {
    format!(
        "{} objects ({} bytes) read back: {} corrupt, {} missing; {} dangling metadata references",
        r.objects_checked,
        r.bytes_checked,
        r.corrupt_count,
        r.missing_count,
        r.dangling.len()
    )
}

impl Registry {
    /// Checks every stored object and the metadata; `progress` hears of each page.
    pub async fn scrub(&self, progress: &(dyn Fn(&ScrubReport) + Send + Sync)) -> Result<ScrubReport> {
        let mut report = ScrubReport {
            dangling: self.db().dangling_metadata(LISTED as i64).await?,
            ..ScrubReport::default()
        };
        let mut after = String::new();
        loop {
            let page = self.db().objects_page(&after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.digest.clone();
            for o in &page {
                let Ok(digest) = o.digest.parse::<Digest>() else {
                    report.corrupt_count += 1;
                    push(&mut report.corrupt, format!("{}: not a valid digest", o.digest));
                    continue;
                };
                match self.read_back(&digest).await {
                    Ok((actual, size)) => {
                        report.objects_checked += 1;
                        report.bytes_checked += size;
                        if actual != digest {
                            report.corrupt_count += 1;
                            push(&mut report.corrupt, format!("{digest}: the bytes hash to {actual}"));
                        } else if size as i64 != o.size {
                            report.corrupt_count += 1;
                            push(
                                &mut report.corrupt,
                                format!("{digest}: {size} bytes stored, {} recorded", o.size),
                            );
                        }
                    }
                    Err(StorageError::NotFound) => {
                        // Collection may have removed it since the page was read.
                        if self.db().object_exists(&o.digest).await? {
                            report.missing_count += 1;
                            push(&mut report.missing, format!("{digest}: recorded but not stored"));
                        }
                    }
                    Err(e) => {
                        report.corrupt_count += 1;
                        push(&mut report.corrupt, format!("{digest}: cannot be read: {e}"));
                    }
                }
            }
            progress(&report);
        }
        report.finished = true;
        progress(&report);
        Ok(report)
    }

    async fn read_back(&self, digest: &Digest) -> std::result::Result<(Digest, u64), StorageError> {
        let mut r = self.store().get(digest, None).await?;
        let mut h = digest.algorithm().hasher();
        let mut n = 0u64;
        while let Some(chunk) = r.stream.next().await {
            let chunk = chunk.map_err(StorageError::Io)?;
            n += chunk.len() as u64;
            h.update(&chunk);
        }
        Ok((h.finish(), n))
    }
}

fn push(list: &mut Vec<String>, line: String) {
    if list.len() < LISTED {
        list.push(line);
    }
}
