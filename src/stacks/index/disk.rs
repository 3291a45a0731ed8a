//! The index on disk: tree listings and file analyses kept between processes, so a restarted
//! service or a second CLI call starts warm. Everything in it is keyed by git ids, so it can
//! only be unused, never stale; what it cannot be trusted on is its own integrity and the code
//! that wrote it. A file is used only when its magic, format version, analysis fingerprint and
//! checksum all match; otherwise it is ignored (and replaced at the next save).
//!
//! Layout: `TIDEMARK-INDEX\0\0` (16 bytes), format version (u32), analysis fingerprint (u32),
//! payload length (u64), payload CRC-32 (u32), all little-endian, then the payload in postcard.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use git2::Oid;
use serde::{Deserialize, Serialize};

use super::super::hcl::{FileFacts, Role};
use crate::repo::TreeItem;
use crate::repo::oid_bytes;

const MAGIC: &[u8; 16] = b"TIDEMARK-INDEX\0\0";
/// Bumped when the layout of the payload changes.
const FORMAT: u32 = 1;
const HEADER: usize = 16 + 4 + 4 + 8 + 4;

/// A CRC-32 of the code that turns files into facts and trees into listings, and of the lock
/// file (the HCL parser is a dependency): facts written by a build whose analysis differs are
/// never trusted, even when they would still decode.
fn analysis() -> u32 {
    static FINGERPRINT: OnceLock<u32> = OnceLock::new();
    *FINGERPRINT.get_or_init(|| {
        let mut crc = crc32fast::Hasher::new();
        for source in [
            include_str!("../hcl.rs"),
            include_str!("../eval.rs"),
            include_str!("../reads.rs"),
            include_str!("../json.rs"),
            include_str!("../tgstack.rs"),
            include_str!("../environment.rs"),
            include_str!("../paths.rs"),
            include_str!("../mod.rs"),
            include_str!("../../schedule.rs"),
            include_str!("../../repo/tree.rs"),
            include_str!("../../../Cargo.lock"),
        ] {
            crc.update(source.as_bytes());
        }
        crc.update(env!("CARGO_PKG_VERSION").as_bytes());
        crc.finalize()
    })
}

/// One cached tree listing.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Tree<I> {
    #[serde(with = "oid_bytes")]
    pub id: Oid,
    pub used: u64,
    pub items: I,
}

/// One cached file analysis.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Facts<F> {
    #[serde(with = "oid_bytes")]
    pub id: Oid,
    pub role: Role,
    pub used: u64,
    pub facts: F,
}

/// The payload: borrowed when saving, owned when loading.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Payload<I, F> {
    pub generation: u64,
    pub trees: Vec<Tree<I>>,
    pub facts: Vec<Facts<F>>,
}

pub(super) type Saving<'a> = Payload<&'a [TreeItem], &'a FileFacts>;
pub(super) type Loaded = Payload<Vec<TreeItem>, FileFacts>;

/// Reads an index file. `Ok(None)` when there is none; `Err` says why an existing one is not
/// used.
pub(super) fn load(path: &Path) -> Result<Option<Loaded>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    decode(&bytes).map(Some)
}

fn decode(bytes: &[u8]) -> Result<Loaded, String> {
    if bytes.len() < HEADER || &bytes[..16] != MAGIC {
        return Err("not a Tidemark index file".to_string());
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let format = word(16);
    if format != FORMAT {
        return Err(format!("format {format}, this build reads {FORMAT}"));
    }
    if word(20) != analysis() {
        return Err("written by a build with another analysis".to_string());
    }
    let len = u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(format!(
            "truncated: {} of {len} payload bytes",
            payload.len()
        ));
    }
    if crc32fast::hash(payload) != word(32) {
        return Err("checksum mismatch".to_string());
    }
    postcard::from_bytes(payload).map_err(|e| format!("cannot decode it: {e}"))
}

/// Writes an index file atomically: a temporary file beside it, renamed over it, so a reader
/// (another CLI call, a restarted service) sees the old file or the new one, never half.
pub(super) fn save(path: &Path, payload: &Saving<'_>) -> Result<()> {
    let bytes = encode(payload)?;
    let dir = path.parent().context("index path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    file.write_all(&bytes)
        .with_context(|| format!("writing {}", file.path().display()))?;
    file.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn encode(payload: &Saving<'_>) -> Result<Vec<u8>> {
    let body = postcard::to_stdvec(payload).context("encoding the index")?;
    let mut bytes = Vec::with_capacity(HEADER + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT.to_le_bytes());
    bytes.extend_from_slice(&analysis().to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::EntryKind;

    fn sample() -> (Vec<TreeItem>, FileFacts) {
        let items = vec![TreeItem {
            name: "main.tf".to_string(),
            id: Oid::from_bytes(&[7; 20]).expect("oid"),
            kind: EntryKind::File,
        }];
        let facts = super::super::super::hcl::analyze(
            b"module \"m\" {\n  source = \"../m\"\n}\nbackend \"s3\" {}\n",
            Role::Terraform,
        );
        (items, facts)
    }

    fn encoded() -> Vec<u8> {
        let (items, facts) = sample();
        let id = Oid::from_bytes(&[1; 20]).expect("oid");
        encode(&Payload {
            generation: 3,
            trees: vec![Tree {
                id,
                used: 3,
                items: &items[..],
            }],
            facts: vec![Facts {
                id,
                role: Role::Terraform,
                used: 2,
                facts: &facts,
            }],
        })
        .expect("encodes")
    }

    #[test]
    fn what_is_saved_loads_back_the_same() {
        let (items, facts) = sample();
        assert!(!facts.modules.is_empty());
        let loaded = decode(&encoded()).expect("decodes");
        assert_eq!(loaded.generation, 3);
        assert_eq!(loaded.trees[0].items, items);
        assert_eq!(loaded.facts[0].facts, facts);
        assert_eq!(loaded.facts[0].used, 2);
    }

    #[test]
    fn a_damaged_or_foreign_file_is_refused_with_the_reason() {
        let good = encoded();
        let mut flipped = good.clone();
        *flipped.last_mut().expect("bytes") ^= 1;
        assert_eq!(decode(&flipped).expect_err("refused"), "checksum mismatch");
        let cut = &good[..good.len() - 3];
        assert!(decode(cut).expect_err("refused").starts_with("truncated"));
        let mut other = good.clone();
        other[16] = 9;
        assert!(decode(&other).expect_err("refused").starts_with("format 9"));
        let mut analysis = good.clone();
        analysis[20] ^= 0xff;
        assert!(
            decode(&analysis)
                .expect_err("refused")
                .contains("another analysis")
        );
        assert!(
            decode(b"{}")
                .expect_err("refused")
                .contains("not a Tidemark index")
        );
        assert!(decode(&[]).is_err());
    }
}
