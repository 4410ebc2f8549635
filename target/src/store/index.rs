//! The ordered metadata index of one target (redb): objects, pending uploads and their parts.
//!
//! Object records are keyed by `bucket 0x00 key`, so a bucket's keys sit together in S3's byte
//! order and a listing is a range scan, never a directory walk.

use std::collections::HashSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aisle_cluster::listing::{
    ListItem, ListPage, ObjectEntry, Start, VersionEntry, common_prefix, prefix_successor,
    resume_start,
};
use aisle_cluster::proto::{CompleteRequest, Have, ListQuery, ObjectMeta};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use aisle_cluster::changes::ChangeTable;
use aisle_cluster::versioning::VersionRef;

use super::{Segment, StoreError, StoredObject, StoredPart, UploadRecord, now_ms};

const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
const PARTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("parts");
/// Deleted keys this target holds (`bucket 0x00 key` → the deletion's version), so a stale
/// copy coming back after an outage is deleted instead of restored.
const TOMBSTONES: TableDefinition<&[u8], u64> = TableDefinition::new("tombstones");
/// Noncurrent versions and delete markers of keys in buckets with versioning, keyed
/// (`bucket 0x00 key`, `u64::MAX - stamp`): a key's versions sit together, newest first. The
/// current version stays in `objects` (newer than every version here); when the newest
/// version is a delete marker the key has no `objects` record and a tombstone at the
/// marker's stamp.
const VERSIONS: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("versions");
/// The bytes of small data files whose own fsync is still owed (mountpath, file → bytes),
/// written in the commit that publishes them, removed once the file is synced; at start a
/// target rewrites every file named here (see `Store::open`).
const JOURNAL: TableDefinition<(u16, &str), &[u8]> = TableDefinition::new("journal");
type VersionsTable<'t> = redb::Table<'t, (&'static [u8], u64), &'static [u8]>;

/// The position of a version in [`VERSIONS`]: newest first.
fn inv(stamp: u64) -> u64 {
    u64::MAX - stamp
}

/// `old`, the current record a write of `new` replaces: kept as a noncurrent version, unless
/// both are the `null` version or they are the same version (a repair, new tags) — then its
/// files go, except those `new` still uses. A `null` write also ends the noncurrent `null`
/// version, if there is one. Returns the files no record uses any more.
fn demote(
    versions: &mut VersionsTable<'_>,
    k: &[u8],
    old: Option<StoredObject>,
    new: &ObjectMeta,
    new_segments: &[Segment],
) -> Result<Vec<Segment>, StoreError> {
    let mut gone = Vec::new();
    if let Some(old) = old {
        let replaced = old.meta.stamp() == new.stamp()
            || (old.meta.version_id.is_none() && new.version_id.is_none());
        if replaced {
            gone.extend(
                old.segments
                    .into_iter()
                    .filter(|s| !new_segments.contains(s)),
            );
        } else {
            versions.insert((k, inv(old.meta.stamp())), encode(&old).as_slice())?;
        }
    }
    if new.version_id.is_none()
        && let Some((at, rec)) = find_version(versions, k, |m| m.version_id.is_none())?
    {
        versions.remove((k, at))?;
        gone.extend(rec.segments);
    }
    Ok(gone)
}

/// The first (newest) noncurrent version of `k` that `want` accepts, with its position.
fn find_version(
    versions: &impl ReadableTable<(&'static [u8], u64), &'static [u8]>,
    k: &[u8],
    want: impl Fn(&ObjectMeta) -> bool,
) -> Result<Option<(u64, StoredObject)>, StoreError> {
    for entry in versions.range((k, 0u64)..=(k, u64::MAX))? {
        let (at, v) = entry?;
        let rec: StoredObject = serde_json::from_slice(v.value())?;
        if want(&rec.meta) {
            return Ok(Some((at.value().1, rec)));
        }
    }
    Ok(None)
}

/// Where a version of a key is held.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// The key's current record (in `objects`).
    Current,
    /// A noncurrent version, at this position of [`VERSIONS`].
    Noncurrent(u64),
}

/// The version of `k` that `want` accepts: the current record if it does, else the newest
/// noncurrent one that does.
fn locate(
    objects: &impl ReadableTable<&'static [u8], &'static [u8]>,
    versions: &impl ReadableTable<(&'static [u8], u64), &'static [u8]>,
    k: &[u8],
    want: impl Fn(&ObjectMeta) -> bool,
) -> Result<Option<(Slot, StoredObject)>, StoreError> {
    if let Some(c) = decode::<StoredObject>(objects.get(k)?)?
        && want(&c.meta)
    {
        return Ok(Some((Slot::Current, c)));
    }
    Ok(find_version(versions, k, want)?.map(|(at, r)| (Slot::Noncurrent(at), r)))
}

/// Write `rec` where `slot` says (the same version, changed: new tags, a good copy).
fn put_at(
    objects: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    versions: &mut VersionsTable<'_>,
    k: &[u8],
    slot: Slot,
    rec: &StoredObject,
) -> Result<(), StoreError> {
    match slot {
        Slot::Current => objects.insert(k, encode(rec).as_slice())?,
        Slot::Noncurrent(at) => versions.insert((k, at), encode(rec).as_slice())?,
    };
    Ok(())
}

/// After a version of `k` was removed: when no current record is left, the newest
/// noncurrent version becomes current — an object moves back into `objects`, a delete marker
/// stays and the key reads as deleted (a tombstone at its stamp).
fn settle(
    objects: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    versions: &mut VersionsTable<'_>,
    tombs: &mut redb::Table<'_, &'static [u8], u64>,
    k: &[u8],
) -> Result<(), StoreError> {
    if objects.get(k)?.is_some() {
        return Ok(());
    }
    match find_version(versions, k, |_| true)? {
        Some((at, rec)) if !rec.meta.delete_marker => {
            versions.remove((k, at))?;
            objects.insert(k, encode(&rec).as_slice())?;
            tombs.remove(k)?;
        }
        Some((_, marker)) => {
            tombs.insert(k, marker.meta.stamp())?;
        }
        None => {
            // Nothing left to hide or restore. No tombstone either: one would travel to the
            // other holders as a plain delete and could remove a version they hold and this
            // target never had.
            tombs.remove(k)?;
        }
    }
    Ok(())
}

/// When a put may replace what is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutRule {
    /// A client write: always (its stamp is the newest).
    Always,
    /// `If-None-Match: *`: only when no object is there.
    IfAbsent,
    /// A pushed copy: only when newer than the object or tombstone held.
    IfNewer,
    /// A good copy replacing a corrupt one: also when it is the same version as the object
    /// held (never over a newer object, nor over a tombstone of the same version or newer).
    Repair,
}

/// Which records a walk over the index meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walked {
    /// Current objects.
    Objects,
    /// Deletions kept (tombstones).
    Tombstones,
    /// Noncurrent versions and delete markers of buckets with versioning.
    Versions,
}

/// One record met by a walk over the index.
#[derive(Debug, Clone)]
pub(crate) struct WalkEntry {
    /// Where the walk resumes after this record (opaque).
    pub raw: Vec<u8>,
    pub bucket: String,
    pub key: String,
    /// Its stamp; `deleted` for a tombstone or a delete marker.
    pub have: Have,
    /// Set for a noncurrent version (or delete marker): which one.
    pub version: Option<VersionRef>,
}

/// What a target holds of a key, from its object record and its tombstone: the newer one.
fn held(obj: Option<&StoredObject>, tomb: Option<u64>) -> Have {
    match (obj.map(|o| o.meta.stamp()), tomb) {
        (Some(v), t) if t.is_none_or(|t| v > t) => Have {
            version: v,
            deleted: false,
        },
        (_, Some(t)) => Have {
            version: t,
            deleted: true,
        },
        _ => Have::default(),
    }
}

fn split_key(raw: &[u8]) -> Option<(String, String)> {
    let i = raw.iter().position(|b| *b == 0)?;
    Some((
        String::from_utf8(raw[..i].to_vec()).ok()?,
        String::from_utf8(raw[i + 1..].to_vec()).ok()?,
    ))
}

pub(super) struct Index {
    db: Database,
    /// Object puts waiting for the next group commit ([`Index::put_object`]).
    puts: Mutex<Vec<Arc<PutJob>>>,
    /// Held by the put that commits the waiting ones.
    put_leader: Mutex<()>,
    /// Bumped after every commit that changes what a read answers, before the change is
    /// acknowledged ([`aisle_cluster::changes`]).
    changes: std::sync::OnceLock<Arc<ChangeTable>>,
}

/// One put of a group commit, and where its outcome is left.
struct PutJob {
    k: Vec<u8>,
    /// The change-table slot of `(bucket, key)`.
    slot: usize,
    rec: StoredObject,
    rule: PutRule,
    journal: Option<(u16, String, Vec<u8>)>,
    done: Mutex<Option<Result<Vec<Segment>, StoreError>>>,
}

fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Decode an optional stored record.
fn decode<T: serde::de::DeserializeOwned>(
    v: Option<redb::AccessGuard<'_, &[u8]>>,
) -> Result<Option<T>, StoreError> {
    Ok(match v {
        Some(v) => Some(serde_json::from_slice(v.value())?),
        None => None,
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("index records always serialize")
}

/// One put of a group commit ([`Index::put_object`]): `Ok(Err(_))` when its rule refuses it
/// (nothing changed), `Err(_)` when the transaction failed.
fn put_one(
    t: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    tombs: &mut redb::Table<'_, &'static [u8], u64>,
    versions: &mut VersionsTable<'_>,
    journal: &mut redb::Table<'_, (u16, &'static str), &'static [u8]>,
    j: &PutJob,
) -> Result<Result<Vec<Segment>, StoreError>, StoreError> {
    let k = j.k.as_slice();
    let old = match decode::<StoredObject>(t.get(k)?) {
        Ok(old) => old,
        Err(e) => return Ok(Err(e)), // this key's record, not the transaction
    };
    match j.rule {
        PutRule::Always => {}
        PutRule::IfAbsent if old.is_some() => return Ok(Err(StoreError::PreconditionFailed)),
        PutRule::IfAbsent => {}
        PutRule::IfNewer | PutRule::Repair => {
            let have = held(old.as_ref(), tombs.get(k)?.map(|v| v.value()));
            let stamp = j.rec.meta.stamp();
            let same_object = j.rule == PutRule::Repair && !have.deleted;
            if have.version > stamp || (have.version == stamp && !same_object) {
                return Ok(Err(StoreError::Stale(have)));
            }
        }
    }
    t.insert(k, encode(&j.rec).as_slice())?;
    tombs.remove(k)?;
    if let Some((mp, file, bytes)) = &j.journal {
        journal.insert((*mp, file.as_str()), bytes.as_slice())?;
    }
    Ok(Ok(demote(versions, k, old, &j.rec.meta, &j.rec.segments)?))
}

impl Index {
    pub(super) fn open(path: &Path) -> Result<Index, StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(OBJECTS)?;
        txn.open_table(UPLOADS)?;
        txn.open_table(PARTS)?;
        txn.open_table(TOMBSTONES)?;
        txn.open_table(VERSIONS)?;
        txn.open_table(JOURNAL)?;
        txn.commit()?;
        Ok(Index {
            db,
            puts: Mutex::default(),
            put_leader: Mutex::default(),
            changes: Default::default(),
        })
    }

    /// Bump `table` after each commit that changes what reads answer (set once, at start).
    pub(super) fn report_changes(&self, table: Arc<ChangeTable>) {
        let _ = self.changes.set(table);
    }

    /// After a commit that may have changed any object's answer.
    fn changed_all(&self) {
        if let Some(t) = self.changes.get() {
            t.bump_all();
        }
    }

    /// Run `f` in one write transaction, committed when it succeeds; reads may answer
    /// differently after it ([`Self::changed_all`]).
    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let out = self.write_unseen(f)?;
        self.changed_all();
        Ok(out)
    }

    /// [`Self::write`] for bookkeeping no read sees (the journal, uploads in progress).
    fn write_unseen<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_write()?;
        let out = f(&txn)?;
        txn.commit()?;
        Ok(out)
    }

    /// Point `(bucket, key)` at `rec` as `rule` allows; `journal` holds the bytes of a segment
    /// of `rec` whose file is not yet fsynced, made durable by this commit instead. Returns
    /// the files no record uses any more.
    ///
    /// Puts are group-committed: the caller that finds no commit running takes every put
    /// waiting and applies them, in arrival order, in one transaction, so concurrent writes
    /// share one flush. Each put's outcome is its own (a refused `If-None-Match` refuses only
    /// that put: every check comes before the put changes anything); none returns before the
    /// commit that holds it is durable.
    pub(super) fn put_object(
        &self,
        bucket: &str,
        key: &str,
        rec: &StoredObject,
        rule: PutRule,
        journal: Option<(&Segment, &[u8])>,
    ) -> Result<Vec<Segment>, StoreError> {
        let job = Arc::new(PutJob {
            k: object_key(bucket, key),
            slot: aisle_cluster::changes::slot(bucket, key),
            rec: rec.clone(),
            rule,
            journal: journal.map(|(seg, b)| (seg.mp, seg.file.clone(), b.to_vec())),
            done: Mutex::new(None),
        });
        self.puts.lock().expect("puts lock").push(job.clone());
        let _leader = self.put_leader.lock().expect("put leader lock");
        if let Some(out) = job.done.lock().expect("put job lock").take() {
            return out; // an earlier leader committed it
        }
        let group = std::mem::take(&mut *self.puts.lock().expect("puts lock"));
        let outcomes = self.commit_puts(&group);
        for (j, out) in group.iter().zip(outcomes) {
            *j.done.lock().expect("put job lock") = Some(out);
        }
        job.done
            .lock()
            .expect("put job lock")
            .take()
            .expect("the leader's own put is in its group")
    }

    /// Apply `group` in one transaction: each put's outcome, or the commit's failure for all.
    fn commit_puts(&self, group: &[Arc<PutJob>]) -> Vec<Result<Vec<Segment>, StoreError>> {
        let run = || -> Result<Vec<Result<Vec<Segment>, StoreError>>, StoreError> {
            let txn = self.db.begin_write()?;
            let mut outs = Vec::with_capacity(group.len());
            {
                let mut t = txn.open_table(OBJECTS)?;
                let mut tombs = txn.open_table(TOMBSTONES)?;
                let mut versions = txn.open_table(VERSIONS)?;
                let mut journal = txn.open_table(JOURNAL)?;
                for j in group {
                    outs.push(put_one(&mut t, &mut tombs, &mut versions, &mut journal, j)?);
                }
            }
            txn.commit()?;
            if let Some(table) = self.changes.get() {
                for j in group {
                    table.bump_slot(j.slot);
                }
            }
            Ok(outs)
        };
        match run() {
            Ok(outs) => outs,
            Err(e) => {
                let message = e.to_string();
                tracing::error!(error = %message, puts = group.len(), "group commit failed");
                group
                    .iter()
                    .map(|_| {
                        Err(StoreError::Io {
                            context: "committing the metadata index".into(),
                            source: std::io::Error::other(message.clone()),
                        })
                    })
                    .collect()
            }
        }
    }

    /// Every journaled file: (mountpath, file, bytes).
    pub(super) fn journaled(&self) -> Result<Vec<(u16, String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for entry in txn.open_table(JOURNAL)?.iter()? {
            let (k, v) = entry?;
            let (mp, file) = k.value();
            out.push((mp, file.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Drop the journaled bytes of files now durable on their own.
    pub(super) fn forget_journaled(&self, files: &[(u16, String)]) -> Result<(), StoreError> {
        self.write_unseen(|txn| {
            let mut t = txn.open_table(JOURNAL)?;
            for (mp, file) in files {
                t.remove((*mp, file.as_str()))?;
            }
            Ok(())
        })
    }

    /// Add a delete marker (`marker.delete_marker`) as the newest version of `(bucket, key)`:
    /// the current version becomes noncurrent (or goes, both being `null`) and the key reads
    /// as deleted. A marker older than the current version changes nothing (a write came
    /// after the delete). Returns the files no record uses any more.
    pub(super) fn put_marker(
        &self,
        bucket: &str,
        key: &str,
        marker: &ObjectMeta,
    ) -> Result<Vec<Segment>, StoreError> {
        let k = object_key(bucket, key);
        self.write(|txn| {
            let mut objects = txn.open_table(OBJECTS)?;
            let cur = decode::<StoredObject>(objects.get(k.as_slice())?)?;
            if cur
                .as_ref()
                .is_some_and(|c| c.meta.stamp() > marker.stamp())
            {
                return Ok(Vec::new());
            }
            if cur.is_some() {
                objects.remove(k.as_slice())?;
            }
            let mut versions = txn.open_table(VERSIONS)?;
            let gone = demote(&mut versions, &k, cur, marker, &[])?;
            let rec = StoredObject {
                meta: marker.clone(),
                ..Default::default()
            };
            versions.insert((k.as_slice(), inv(marker.stamp())), encode(&rec).as_slice())?;
            let mut tombs = txn.open_table(TOMBSTONES)?;
            let prev = tombs.get(k.as_slice())?.map(|v| v.value()).unwrap_or(0);
            tombs.insert(k.as_slice(), prev.max(marker.stamp()))?;
            Ok(gone)
        })
    }

    /// Remove one version of `(bucket, key)` for good (the current one, a noncurrent one or a
    /// delete marker); the newest left becomes current. Returns what was removed (`None`: no
    /// such version) and the files no record uses any more.
    pub(super) fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        which: &VersionRef,
    ) -> Result<(Option<ObjectMeta>, Vec<Segment>), StoreError> {
        let k = object_key(bucket, key);
        self.write(|txn| {
            let mut objects = txn.open_table(OBJECTS)?;
            let mut versions = txn.open_table(VERSIONS)?;
            let Some((slot, removed)) = locate(&objects, &versions, &k, |m| which.matches(m))?
            else {
                return Ok((None, Vec::new()));
            };
            match slot {
                Slot::Current => objects.remove(k.as_slice())?,
                Slot::Noncurrent(at) => versions.remove((k.as_slice(), at))?,
            };
            let mut tombs = txn.open_table(TOMBSTONES)?;
            settle(&mut objects, &mut versions, &mut tombs, &k)?;
            Ok((Some(removed.meta), removed.segments))
        })
    }

    /// One version of `(bucket, key)`: the current record or a noncurrent one (or a marker).
    pub(super) fn get_version(
        &self,
        bucket: &str,
        key: &str,
        which: &VersionRef,
    ) -> Result<Option<StoredObject>, StoreError> {
        let k = object_key(bucket, key);
        let txn = self.db.begin_read()?;
        let (objects, versions) = (txn.open_table(OBJECTS)?, txn.open_table(VERSIONS)?);
        Ok(locate(&objects, &versions, &k, |m| which.matches(m))?.map(|(_, r)| r))
    }

    /// New tags for the version stamped `stamp` of `(bucket, key)`, current or noncurrent:
    /// same bytes, same stamp. [`StoreError::Stale`] when the key's current version is
    /// another one and no such noncurrent version is held; [`StoreError::NoSuchKey`] when
    /// there is neither.
    pub(super) fn retag(
        &self,
        bucket: &str,
        key: &str,
        stamp: u64,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<ObjectMeta, StoreError> {
        let k = object_key(bucket, key);
        self.write(|txn| {
            let mut objects = txn.open_table(OBJECTS)?;
            let mut versions = txn.open_table(VERSIONS)?;
            let want = |m: &ObjectMeta| m.stamp() == stamp && !m.delete_marker;
            let Some((slot, mut rec)) = locate(&objects, &versions, &k, want)? else {
                let cur = decode::<StoredObject>(objects.get(k.as_slice())?)?;
                let tomb = txn
                    .open_table(TOMBSTONES)?
                    .get(k.as_slice())?
                    .map(|v| v.value());
                return Err(match cur {
                    Some(c) => StoreError::Stale(held(Some(&c), tomb)),
                    None => StoreError::NoSuchKey,
                });
            };
            rec.meta.attrs.tags = tags;
            put_at(&mut objects, &mut versions, &k, slot, &rec)?;
            Ok(rec.meta)
        })
    }

    /// Every version of `(bucket, key)`, newest first.
    pub(super) fn versions_of(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Vec<StoredObject>, StoreError> {
        let k = object_key(bucket, key);
        let txn = self.db.begin_read()?;
        let mut out: Vec<StoredObject> = decode(txn.open_table(OBJECTS)?.get(k.as_slice())?)?
            .into_iter()
            .collect();
        let versions = txn.open_table(VERSIONS)?;
        for entry in versions.range((k.as_slice(), 0u64)..=(k.as_slice(), u64::MAX))? {
            out.push(serde_json::from_slice(entry?.1.value())?);
        }
        Ok(out)
    }

    /// The newest version of `(bucket, key)` when it is a delete marker (the key reads as
    /// deleted because of it).
    pub(super) fn latest_marker(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectMeta>, StoreError> {
        let k = object_key(bucket, key);
        let txn = self.db.begin_read()?;
        if txn.open_table(OBJECTS)?.get(k.as_slice())?.is_some() {
            return Ok(None);
        }
        let versions = txn.open_table(VERSIONS)?;
        Ok(find_version(&versions, &k, |_| true)?
            .map(|(_, r)| r.meta)
            .filter(|m| m.delete_marker))
    }

    /// What this target holds of `(bucket, key)`: the newer of its object and its tombstone.
    pub(super) fn have(&self, bucket: &str, key: &str) -> Result<Have, StoreError> {
        let k = object_key(bucket, key);
        let txn = self.db.begin_read()?;
        let obj = decode::<StoredObject>(txn.open_table(OBJECTS)?.get(k.as_slice())?)?;
        let tomb = txn
            .open_table(TOMBSTONES)?
            .get(k.as_slice())?
            .map(|v| v.value());
        Ok(held(obj.as_ref(), tomb))
    }

    /// Delete the object unless it is newer than `version`; with `tombstone`, remember the
    /// deletion. Returns the removed record.
    pub(super) fn delete_versioned(
        &self,
        bucket: &str,
        key: &str,
        version: u64,
        tombstone: bool,
    ) -> Result<Option<StoredObject>, StoreError> {
        let k = object_key(bucket, key);
        let txn = self.db.begin_write()?;
        let old = {
            let mut t = txn.open_table(OBJECTS)?;
            let cur = decode::<StoredObject>(t.get(k.as_slice())?)?;
            // A copy newer than the deletion survives it, and needs no tombstone.
            let newer = cur.as_ref().is_some_and(|o| o.meta.stamp() > version);
            if newer {
                return Ok(None);
            }
            if cur.is_some() {
                t.remove(k.as_slice())?;
            }
            if tombstone {
                let mut tombs = txn.open_table(TOMBSTONES)?;
                let prev = tombs.get(k.as_slice())?.map(|v| v.value()).unwrap_or(0);
                tombs.insert(k.as_slice(), prev.max(version))?;
            }
            cur
        };
        txn.commit()?;
        self.changed_all();
        Ok(old)
    }

    /// Remove this target's object or tombstone of `(bucket, key)` if it is still exactly
    /// `have` (a newer write since leaves it be). Returns the removed object record.
    pub(super) fn remove_if(
        &self,
        bucket: &str,
        key: &str,
        have: Have,
    ) -> Result<Option<StoredObject>, StoreError> {
        let k = object_key(bucket, key);
        let txn = self.db.begin_write()?;
        let old = if have.deleted {
            let mut tombs = txn.open_table(TOMBSTONES)?;
            if tombs.get(k.as_slice())?.map(|v| v.value()) == Some(have.version) {
                tombs.remove(k.as_slice())?;
            }
            None
        } else {
            let mut t = txn.open_table(OBJECTS)?;
            let cur = decode::<StoredObject>(t.get(k.as_slice())?)?;
            match cur {
                Some(o) if o.meta.stamp() == have.version => {
                    t.remove(k.as_slice())?;
                    Some(o)
                }
                _ => None,
            }
        };
        txn.commit()?;
        self.changed_all();
        Ok(old)
    }

    /// Up to `limit` records of one kind after `after`, in index order.
    pub(super) fn walk(
        &self,
        kind: Walked,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<WalkEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        let range = (
            after.map_or(Bound::Unbounded, Bound::Excluded),
            Bound::<&[u8]>::Unbounded,
        );
        let mut out = Vec::new();
        let mut push = |raw: Vec<u8>, k: &[u8], have: Have, version: Option<VersionRef>| {
            if let Some((bucket, key)) = split_key(k) {
                out.push(WalkEntry {
                    raw,
                    bucket,
                    key,
                    have,
                    version,
                });
            }
        };
        match kind {
            Walked::Tombstones => {
                let t = txn.open_table(TOMBSTONES)?;
                for entry in t.range::<&[u8]>(range)?.take(limit) {
                    let (k, v) = entry?;
                    let have = Have {
                        version: v.value(),
                        deleted: true,
                    };
                    push(k.value().to_vec(), k.value(), have, None);
                }
            }
            Walked::Objects => {
                let t = txn.open_table(OBJECTS)?;
                for entry in t.range::<&[u8]>(range)?.take(limit) {
                    let (k, v) = entry?;
                    let rec: StoredObject = serde_json::from_slice(v.value())?;
                    let have = Have {
                        version: rec.meta.stamp(),
                        deleted: false,
                    };
                    push(k.value().to_vec(), k.value(), have, None);
                }
            }
            Walked::Versions => {
                // `raw` is the index key followed by the 8 bytes of the position.
                let from = match after {
                    Some(a) if a.len() >= 8 => {
                        let (k, at) = a.split_at(a.len() - 8);
                        let at = u64::from_be_bytes(at.try_into().expect("8 bytes"));
                        Bound::Excluded((k, at))
                    }
                    _ => Bound::Unbounded,
                };
                let t = txn.open_table(VERSIONS)?;
                for entry in t
                    .range::<(&[u8], u64)>((from, Bound::Unbounded))?
                    .take(limit)
                {
                    let (k, v) = entry?;
                    let (raw_key, at) = k.value();
                    let rec: StoredObject = serde_json::from_slice(v.value())?;
                    let have = Have {
                        version: rec.meta.stamp(),
                        deleted: rec.meta.delete_marker,
                    };
                    let mut raw = raw_key.to_vec();
                    raw.extend_from_slice(&at.to_be_bytes());
                    push(raw, raw_key, have, Some(VersionRef::of(&rec.meta)));
                }
            }
        }
        Ok(out)
    }

    /// What this target holds of one version of `(bucket, key)`: its stamp (for the `null`
    /// version: the stamp of the null version held, which may be another one), or nothing.
    pub(super) fn have_version(
        &self,
        bucket: &str,
        key: &str,
        which: &VersionRef,
    ) -> Result<Have, StoreError> {
        Ok(match self.get_version(bucket, key, which)? {
            Some(r) => Have {
                version: r.meta.stamp(),
                deleted: r.meta.delete_marker,
            },
            None => Have::default(),
        })
    }

    /// Take in a version pushed by another target (a rebalance moving a key's history): newer
    /// than all held, it becomes the current version (or the newest marker) as a write would;
    /// older, it joins the noncurrent versions — unless it is held already, or it is a `null`
    /// version older than the null version held (that one replaced it). Returns the files no
    /// record uses any more, or [`StoreError::Stale`] when nothing changed.
    pub(super) fn put_version(
        &self,
        bucket: &str,
        key: &str,
        rec: &StoredObject,
        repair: bool,
    ) -> Result<Vec<Segment>, StoreError> {
        let k = object_key(bucket, key);
        let stamp = rec.meta.stamp();
        let which = VersionRef::of(&rec.meta);
        let held = self.have(bucket, key)?;
        if let Some(same) = self.get_version(bucket, key, &which)?
            && same.meta.stamp() >= stamp
        {
            if repair && same.meta.stamp() == stamp && !rec.meta.delete_marker {
                return self.replace_version(&k, rec);
            }
            return Err(StoreError::Stale(held));
        }
        if stamp > held.version {
            return if rec.meta.delete_marker {
                self.put_marker(bucket, key, &rec.meta)
            } else {
                self.put_object(bucket, key, rec, PutRule::IfNewer, None)
            };
        }
        self.write(|txn| {
            let mut versions = txn.open_table(VERSIONS)?;
            let mut gone = Vec::new();
            if rec.meta.version_id.is_none()
                && let Some((at, old)) = find_version(&versions, &k, |m| m.version_id.is_none())?
            {
                versions.remove((k.as_slice(), at))?;
                gone = old.segments;
            }
            versions.insert((k.as_slice(), inv(stamp)), encode(rec).as_slice())?;
            Ok(gone)
        })
    }

    /// A good copy of a version held (current or noncurrent) replacing a corrupt one, in
    /// place. Returns the corrupt copy's files.
    fn replace_version(&self, k: &[u8], rec: &StoredObject) -> Result<Vec<Segment>, StoreError> {
        let stamp = rec.meta.stamp();
        let old = self.write(|txn| {
            let mut objects = txn.open_table(OBJECTS)?;
            let mut versions = txn.open_table(VERSIONS)?;
            let found = locate(&objects, &versions, k, |m| m.stamp() == stamp)?;
            if let Some((slot, _)) = found {
                put_at(&mut objects, &mut versions, k, slot, rec)?;
            }
            Ok(found.map(|(_, old)| old))
        })?;
        Ok(old
            .map(|o| {
                o.segments
                    .into_iter()
                    .filter(|s| !rec.segments.contains(s))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Remove the noncurrent version stamped `stamp` (a rebalance moved it away). Returns its
    /// record if it was there.
    pub(super) fn remove_version(
        &self,
        bucket: &str,
        key: &str,
        stamp: u64,
    ) -> Result<Option<StoredObject>, StoreError> {
        let k = object_key(bucket, key);
        self.write(|txn| {
            let mut versions = txn.open_table(VERSIONS)?;
            decode::<StoredObject>(versions.remove((k.as_slice(), inv(stamp)))?)
        })
    }

    /// Records held: objects, tombstones and noncurrent versions.
    pub(super) fn record_count(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(OBJECTS)?.len()?
            + txn.open_table(TOMBSTONES)?.len()?
            + txn.open_table(VERSIONS)?.len()?)
    }

    /// Replace the record only if the current one has `expected_etag` (None: absent).
    pub(super) fn replace_if(
        &self,
        bucket: &str,
        key: &str,
        expected_etag: Option<&str>,
        rec: &StoredObject,
    ) -> Result<Option<StoredObject>, StoreError> {
        let k = object_key(bucket, key);
        let txn = self.db.begin_write()?;
        let old = {
            let mut t = txn.open_table(OBJECTS)?;
            let old = decode::<StoredObject>(t.get(k.as_slice())?)?;
            if old.as_ref().map(|o| o.meta.etag.as_str()) != expected_etag {
                return Err(StoreError::PreconditionFailed);
            }
            t.insert(k.as_slice(), encode(rec).as_slice())?;
            old
        };
        txn.commit()?;
        self.changed_all();
        Ok(old)
    }

    pub(super) fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<StoredObject>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OBJECTS)?;
        decode(t.get(object_key(bucket, key).as_slice())?)
    }

    pub(super) fn list(&self, q: &ListQuery) -> Result<ListPage, StoreError> {
        if q.versions {
            return self.list_versions(q);
        }
        let mut base = q.bucket.as_bytes().to_vec();
        base.push(0);
        let with_base = |s: &[u8]| {
            let mut v = base.clone();
            v.extend_from_slice(s);
            v
        };
        let floor = with_base(q.prefix.as_bytes());
        let mut start: Bound<Vec<u8>> = match q.after.as_deref() {
            None => Bound::Included(floor.clone()),
            Some(after) => match resume_start(after, &q.prefix, q.delimiter.as_deref()) {
                Start::After(a) => Bound::Excluded(with_base(&a)),
                Start::AtOrAfter(a) => Bound::Included(with_base(&a)),
                Start::End => return Ok(ListPage::default()),
            },
        };
        let below_floor = match &start {
            Bound::Included(s) | Bound::Excluded(s) => s.as_slice() < floor.as_slice(),
            Bound::Unbounded => true,
        };
        if below_floor {
            start = Bound::Included(floor.clone());
        }
        // Everything of this bucket under the prefix is below `end`.
        let end: Bound<Vec<u8>> = match prefix_successor(&floor) {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OBJECTS)?;
        let mut page = ListPage::default();
        'scan: loop {
            let range = (
                start.as_ref().map(|v| v.as_slice()),
                end.as_ref().map(|v| v.as_slice()),
            );
            for entry in t.range::<&[u8]>(range)? {
                let (k, v) = entry?;
                let key = std::str::from_utf8(&k.value()[base.len()..])
                    .map_err(|e| StoreError::Invalid(format!("stored key is not UTF-8: {e}")))?
                    .to_string();
                if page.items.len() == q.limit {
                    page.truncated = true;
                    break 'scan;
                }
                if let Some(cp) = common_prefix(&key, &q.prefix, delimiter) {
                    page.items.push(ListItem::Prefix(cp.to_string()));
                    match prefix_successor(&with_base(cp.as_bytes())) {
                        Some(next) => {
                            start = Bound::Included(next);
                            continue 'scan;
                        }
                        None => break 'scan,
                    }
                }
                let rec: StoredObject = serde_json::from_slice(v.value())?;
                page.items.push(ListItem::Object(ObjectEntry {
                    key,
                    size: rec.meta.size,
                    etag: rec.meta.etag,
                    mtime_ms: rec.meta.mtime_ms,
                    version: None,
                }));
            }
            break;
        }
        Ok(page)
    }

    /// One page of every version of the keys of a bucket (ListObjectVersions): key by key in
    /// byte order, each key's versions newest first (the current one from `objects`, then
    /// the noncurrent ones and markers), every version one item; common prefixes as in
    /// [`Self::list`]. Resumes after `q.after` — within that key after `q.after_version`
    /// when it is given.
    fn list_versions(&self, q: &ListQuery) -> Result<ListPage, StoreError> {
        let mut base = q.bucket.as_bytes().to_vec();
        base.push(0);
        let with_base = |s: &[u8]| {
            let mut v = base.clone();
            v.extend_from_slice(s);
            v
        };
        let floor = with_base(q.prefix.as_bytes());
        let end = prefix_successor(&floor);
        let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
        let txn = self.db.begin_read()?;
        let objects = txn.open_table(OBJECTS)?;
        let versions = txn.open_table(VERSIONS)?;
        // Where the search for the next key starts, and (resuming inside a key) which of its
        // versions to skip: those at or above this position.
        let mut from: Bound<Vec<u8>> = Bound::Included(floor.clone());
        let mut resume_in: Option<(Vec<u8>, u64)> = None;
        if let Some(after) = q.after.as_deref() {
            let which = q.after_version.as_deref().and_then(VersionRef::parse);
            match (which, resume_start(after, &q.prefix, delimiter)) {
                (Some(which), Start::After(_)) => {
                    let k = with_base(after.as_bytes());
                    let at =
                        locate(&objects, &versions, &k, |m| which.matches(m))?.map(|(slot, r)| {
                            match slot {
                                Slot::Current => inv(r.meta.stamp()),
                                Slot::Noncurrent(at) => at,
                            }
                        });
                    match at {
                        Some(at) => {
                            resume_in = Some((k.clone(), at));
                            from = Bound::Included(k);
                        }
                        None => from = Bound::Excluded(k),
                    }
                }
                (_, Start::After(a)) => from = Bound::Excluded(with_base(&a)),
                (_, Start::AtOrAfter(a)) => from = Bound::Included(with_base(&a)),
                (_, Start::End) => return Ok(ListPage::default()),
            }
            let below = match &from {
                Bound::Included(s) | Bound::Excluded(s) => s.as_slice() < floor.as_slice(),
                Bound::Unbounded => true,
            };
            if below {
                from = Bound::Included(floor.clone());
                resume_in = None;
            }
        }
        let below_end = |k: &[u8]| end.as_deref().is_none_or(|e| k < e);
        let mut page = ListPage::default();
        loop {
            // The next key either table holds.
            let next_obj = match objects
                .range::<&[u8]>((from.as_ref().map(|v| v.as_slice()), Bound::Unbounded))?
                .next()
            {
                Some(e) => Some(e?.0.value().to_vec()),
                None => None,
            };
            let vfrom = match &from {
                Bound::Included(k) => Bound::Included((k.as_slice(), 0u64)),
                Bound::Excluded(k) => Bound::Excluded((k.as_slice(), u64::MAX)),
                Bound::Unbounded => Bound::Unbounded,
            };
            let next_ver = match versions
                .range::<(&[u8], u64)>((vfrom, Bound::Unbounded))?
                .next()
            {
                Some(e) => Some(e?.0.value().0.to_vec()),
                None => None,
            };
            let k = match (next_obj, next_ver) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => break,
            };
            if !below_end(&k) {
                break;
            }
            let key = std::str::from_utf8(&k[base.len()..])
                .map_err(|e| StoreError::Invalid(format!("stored key is not UTF-8: {e}")))?
                .to_string();
            if let Some(cp) = common_prefix(&key, &q.prefix, delimiter) {
                if page.items.len() == q.limit {
                    page.truncated = true;
                    break;
                }
                page.items.push(ListItem::Prefix(cp.to_string()));
                match prefix_successor(&with_base(cp.as_bytes())) {
                    Some(next) => from = Bound::Included(next),
                    None => break,
                }
                continue;
            }
            let mut recs: Vec<StoredObject> = Vec::new();
            if let Some(c) = decode::<StoredObject>(objects.get(k.as_slice())?)? {
                recs.push(c);
            }
            for entry in versions.range((k.as_slice(), 0u64)..=(k.as_slice(), u64::MAX))? {
                let (_, v) = entry?;
                recs.push(serde_json::from_slice(v.value())?);
            }
            let skip_to = resume_in
                .take()
                .filter(|(rk, _)| *rk == k)
                .map(|(_, at)| at);
            for (i, rec) in recs.into_iter().enumerate() {
                let stamp = rec.meta.stamp();
                if skip_to.is_some_and(|at| inv(stamp) <= at) {
                    continue;
                }
                if page.items.len() == q.limit {
                    page.truncated = true;
                    return Ok(page);
                }
                page.items.push(ListItem::Object(ObjectEntry {
                    key: key.clone(),
                    size: rec.meta.size,
                    etag: rec.meta.etag,
                    mtime_ms: rec.meta.mtime_ms,
                    version: Some(VersionEntry {
                        id: rec.meta.version_id,
                        stamp,
                        latest: i == 0,
                        delete_marker: rec.meta.delete_marker,
                    }),
                }));
            }
            from = Bound::Excluded(k);
        }
        Ok(page)
    }

    /// Every object record, with its bucket name.
    pub(super) fn for_each_object(
        &self,
        mut f: impl FnMut(&[u8], &StoredObject),
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OBJECTS)?;
        for entry in t.iter()? {
            let (k, v) = entry?;
            let raw = k.value();
            let bucket = raw.split(|b| *b == 0).next().unwrap_or(raw);
            f(bucket, &serde_json::from_slice(v.value())?);
        }
        Ok(())
    }

    pub(super) fn referenced_files(&self) -> Result<HashSet<(u16, String)>, StoreError> {
        let mut set = HashSet::new();
        self.for_each_object(|_, o| {
            for s in &o.segments {
                set.insert((s.mp, s.file.clone()));
            }
        })?;
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PARTS)?;
        for entry in t.iter()? {
            let (_, v) = entry?;
            let p: StoredPart = serde_json::from_slice(v.value())?;
            set.insert((p.segment.mp, p.segment.file));
        }
        for entry in txn.open_table(VERSIONS)?.iter()? {
            let (_, v) = entry?;
            let r: StoredObject = serde_json::from_slice(v.value())?;
            set.extend(r.segments.into_iter().map(|s| (s.mp, s.file)));
        }
        Ok(set)
    }

    pub(super) fn put_upload(&self, id: &str, rec: &UploadRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(UPLOADS)?
            .insert(id, encode(rec).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub(super) fn get_upload(&self, id: &str) -> Result<Option<UploadRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(UPLOADS)?;
        decode(t.get(id)?)
    }

    pub(super) fn uploads(&self) -> Result<Vec<(String, UploadRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(UPLOADS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), serde_json::from_slice(v.value())?));
        }
        Ok(out)
    }

    pub(super) fn put_part(
        &self,
        id: &str,
        part: &StoredPart,
    ) -> Result<Option<StoredPart>, StoreError> {
        let txn = self.db.begin_write()?;
        let old = {
            if txn.open_table(UPLOADS)?.get(id)?.is_none() {
                return Err(StoreError::NoSuchUpload);
            }
            let mut t = txn.open_table(PARTS)?;
            decode::<StoredPart>(t.insert((id, part.info.number), encode(part).as_slice())?)?
        };
        txn.commit()?;
        Ok(old)
    }

    pub(super) fn parts(&self, id: &str) -> Result<Vec<StoredPart>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PARTS)?;
        let mut out = Vec::new();
        for entry in t.range((id, 0u32)..=(id, u32::MAX))? {
            let (_, v) = entry?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    pub(super) fn remove_upload(&self, id: &str) -> Result<Vec<StoredPart>, StoreError> {
        let txn = self.db.begin_write()?;
        let mut removed = Vec::new();
        {
            txn.open_table(UPLOADS)?.remove(id)?;
            let mut t = txn.open_table(PARTS)?;
            for entry in t.extract_from_if((id, 0u32)..=(id, u32::MAX), |_, _| true)? {
                let (_, v) = entry?;
                removed.push(serde_json::from_slice(v.value())?);
            }
        }
        txn.commit()?;
        Ok(removed)
    }

    /// Publish an upload's named parts as the object, in one transaction. Returns the new
    /// metadata and the files no record uses any more (parts left out, a replaced version).
    pub(super) fn complete(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        req: &CompleteRequest,
    ) -> Result<(ObjectMeta, Vec<Segment>), StoreError> {
        let txn = self.db.begin_write()?;
        let result = {
            let upload: UploadRecord = match txn.open_table(UPLOADS)?.get(id)? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => return Err(StoreError::NoSuchUpload),
            };
            if upload.bucket != bucket || upload.key != key {
                return Err(StoreError::NoSuchUpload);
            }
            let mut all: Vec<StoredPart> = Vec::new();
            {
                let mut t = txn.open_table(PARTS)?;
                for entry in t.extract_from_if((id, 0u32)..=(id, u32::MAX), |_, _| true)? {
                    let (_, v) = entry?;
                    all.push(serde_json::from_slice(v.value())?);
                }
            }
            let mut segments = Vec::with_capacity(req.parts.len());
            let mut sizes = Vec::with_capacity(req.parts.len());
            for want in &req.parts {
                let found = all
                    .iter()
                    .find(|p| p.info.number == want.number && p.info.etag == want.etag)
                    .ok_or(StoreError::InvalidPart(want.number))?;
                segments.push(found.segment.clone());
                sizes.push(found.info.size);
            }
            let unused: Vec<Segment> = all
                .iter()
                .filter(|p| !req.parts.iter().any(|w| w.number == p.info.number))
                .map(|p| p.segment.clone())
                .collect();
            let meta = ObjectMeta {
                size: sizes.iter().sum(),
                etag: req.etag.clone(),
                mtime_ms: now_ms(),
                attrs: upload.attrs,
                checksums: req.checksums.clone(),
                parts: sizes,
                version: req.write.version,
                remote: None,
                upload_id: Some(id.to_string()),
                version_id: req.write.versioning.id_for(req.write.version),
                delete_marker: false,
            };
            let rec = StoredObject {
                meta: meta.clone(),
                segments,
                ..Default::default()
            };
            txn.open_table(UPLOADS)?.remove(id)?;
            let mut objects = txn.open_table(OBJECTS)?;
            let k = object_key(bucket, key);
            let old =
                decode::<StoredObject>(objects.insert(k.as_slice(), encode(&rec).as_slice())?)?;
            txn.open_table(TOMBSTONES)?.remove(k.as_slice())?;
            let mut versions = txn.open_table(VERSIONS)?;
            let mut gone = demote(&mut versions, &k, old, &rec.meta, &rec.segments)?;
            gone.extend(unused);
            (meta, gone)
        };
        txn.commit()?;
        self.changed_all();
        Ok(result)
    }
}
