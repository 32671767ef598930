//! [`DiskStorage`]: raft-rs's [`Storage`] over one append-only, checksummed file in a data
//! directory, holding the log entries, the hard state, the conf state and the metadata (and
//! bytes) of the last snapshot. Everything is also kept in memory, so the `Storage` queries the
//! raft core makes on every step read no file.
//!
//! File `raft.log` (docs/CLUSTER.md "Storage layout"), all integers little-endian:
//!
//! ```text
//! header:  "OFFRLOG" (7 bytes) | version (1 byte, LOG_VERSION)
//! record:  payload length (u32) | CRC-32C of the payload (u32) | CRC-32C of those 8 bytes (u32)
//!          | payload: kind (1 byte) | body
//! kind 1 entry:       index u64 | term u64 | entry type u8 | sync_log u8 | context (u32 len, bytes) | data (u32 len, bytes)
//! kind 2 hard state:  term u64 | vote u64 | commit u64
//! kind 3 conf state:  voters, learners, voters_outgoing, learners_next (each u32 count, u64s) | auto_leave u8
//! kind 4 snapshot:    index u64 | term u64 | conf state (as kind 3's body) | data (u32 len, bytes)
//! ```
//!
//! Records are applied in file order on open: an entry overwrites the entries from its index
//! on (as raft's append does), a hard or conf state replaces the last, a snapshot drops every
//! entry. Compaction and an applied snapshot rewrite the file (snapshot, hard state, conf
//! state, the entries left) to `raft.log.tmp`, fsync it, rename it over `raft.log` and fsync
//! the directory, so a crash leaves either the old file or the new one.
//!
//! Durability: `append`, `set_hard_state`, `set_commit` and `set_conf_state` only encode into
//! a buffer (and update memory); [`DiskStorage::sync`] writes the buffer and fsyncs
//! (`fdatasync`) it, and [`DiskStorage::persist`] is append + hard state + one `sync`, the
//! group commit of one `Ready`. Nothing may be acknowledged (persisted messages sent, votes
//! cast, `advance` called) before that returns `Ok`. Creating the file, cutting a torn tail,
//! `compact` and `apply_snapshot` fsync too. A failed write or fsync poisons the storage:
//! every later call fails (the page cache's state after a failed fsync is unknowable), so
//! the node stops instead of acknowledging what may not be on disk.
//!
//! Open: a record cut by a crash (short header, short payload, or a bad checksum with no
//! whole record after it) is the torn tail of an append that was never acknowledged; the
//! file is cut back to the last whole record and fsynced. Any other damage — a bad
//! checksum with whole records after it, a wrong magic or version, a record that does not
//! parse or breaks the log's order — is a [`StoreError`] and the node must not start: it
//! never votes on a log it cannot trust. (Damage to the very last record cannot be told from
//! a torn write, and is cut like one.)

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage};

use super::crc::crc32c;

/// The log's file name inside the data directory.
pub const LOG_FILE: &str = "raft.log";
const TMP_FILE: &str = "raft.log.tmp";
/// The file's first seven bytes.
pub const MAGIC: [u8; 7] = *b"OFFRLOG";
/// The format version after the magic; a file of another version is refused.
pub const LOG_VERSION: u8 = 1;
const FILE_HEADER: usize = MAGIC.len() + 1;
const RECORD_HEADER: usize = 12;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;

/// Why the storage cannot go on. Every variant stops the node.
#[derive(Debug)]
pub enum StoreError {
    /// A file operation failed; `what` says which.
    Io { what: &'static str, path: PathBuf, source: io::Error },
    /// The file does not start with [`MAGIC`]: not an officer raft log.
    BadMagic { path: PathBuf },
    /// The file is of a format version this build does not read.
    Version { path: PathBuf, found: u8 },
    /// Damage that is not a torn tail, at byte `offset` of the file.
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// A write the log's order forbids (a gap, an overwrite of compacted entries, compaction
    /// past the commit index): a bug in the caller, refused before anything is written.
    Refused(String),
    /// An earlier write or fsync failed; nothing more is written or read.
    Failed,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { what, path, source } => {
                write!(f, "raft log {}: {what} failed: {source}", path.display())
            }
            StoreError::BadMagic { path } => {
                write!(f, "raft log {}: not an officer raft log (bad magic)", path.display())
            }
            StoreError::Version { path, found } => {
                write!(
                    f,
                    "raft log {}: format version {found}, this build reads {LOG_VERSION}",
                    path.display()
                )
            }
            StoreError::Corrupt { path, offset, reason } => {
                write!(
                    f,
                    "raft log {} is corrupt at byte {offset}: {reason}; the node will not start on it",
                    path.display()
                )
            }
            StoreError::Refused(why) => write!(f, "raft log write refused: {why}"),
            StoreError::Failed => write!(f, "raft log failed earlier; the node must stop"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<StoreError> for raft::Error {
    fn from(e: StoreError) -> raft::Error {
        raft::Error::Store(raft::StorageError::Other(Box::new(e)))
    }
}

/// What `open` found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Whole records replayed.
    pub records: u64,
    /// Bytes of a torn tail cut off (0 if the file ended on a record).
    pub torn_bytes: u64,
    /// Whether the file was created by this open.
    pub created: bool,
}

/// Raft log storage in a data directory; see the module documentation.
pub struct DiskStorage {
    path: PathBuf,
    file: File,
    /// Records encoded by the write calls and not yet written by `sync`.
    pending: Vec<u8>,
    hard_state: HardState,
    conf_state: ConfState,
    /// The last snapshot's index, term and conf state (index 0: none yet).
    snapshot: SnapshotMetadata,
    snapshot_data: Vec<u8>,
    /// The entries after the snapshot: `entries[i].index == snapshot.index + 1 + i`.
    entries: Vec<Entry>,
    failed: bool,
    report: OpenReport,
}

impl DiskStorage {
    /// Opens the log in `dir` (created, with the directory, if missing), replays it and cuts a
    /// torn tail. Any other damage is an error: the node must not start on it.
    pub fn open(dir: impl AsRef<Path>) -> Result<DiskStorage, StoreError> {
        let dir = dir.as_ref();
        let path = dir.join(LOG_FILE);
        fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        // A leftover of a rewrite that crashed before its rename: the log beside it is whole.
        let tmp = dir.join(TMP_FILE);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(io("remove stale temporary file", &tmp))?;
        }
        let mut created = false;
        if !path.exists() {
            write_atomically(dir, &path, &file_header())?;
            created = true;
        }
        let mut file = OpenOptions::new().read(true).write(true).open(&path).map_err(io("open", &path))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(io("read", &path))?;
        if buf.len() < FILE_HEADER || buf[..MAGIC.len()] != MAGIC {
            return Err(StoreError::BadMagic { path });
        }
        if buf[MAGIC.len()] != LOG_VERSION {
            return Err(StoreError::Version { path, found: buf[MAGIC.len()] });
        }
        let mut store = DiskStorage {
            path,
            file,
            pending: Vec::new(),
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            snapshot: SnapshotMetadata::default(),
            snapshot_data: Vec::new(),
            entries: Vec::new(),
            failed: false,
            report: OpenReport { created, ..OpenReport::default() },
        };
        let end = store.replay(&buf)?;
        if end < buf.len() {
            store.report.torn_bytes = (buf.len() - end) as u64;
            store.file.set_len(end as u64).map_err(io("cut the torn tail", &store.path))?;
            store.file.sync_data().map_err(io("fsync after cutting the torn tail", &store.path))?;
        }
        store.file.seek(SeekFrom::End(0)).map_err(io("seek", &store.path))?;
        Ok(store)
    }

    /// Replays the records of `buf` (a whole file) into memory; returns where the whole
    /// records end (the file's length unless its tail is torn).
    fn replay(&mut self, buf: &[u8]) -> Result<usize, StoreError> {
        let mut at = FILE_HEADER;
        while at < buf.len() {
            let Some(payload) = whole_record(buf, at) else {
                if (at + 1..buf.len()).any(|q| whole_record(buf, q).is_some()) {
                    return Err(self.corrupt(at, "bad record checksum with whole records after it".into()));
                }
                return Ok(at);
            };
            self.apply_record(payload).map_err(|reason| self.corrupt(at, reason))?;
            self.report.records += 1;
            at += RECORD_HEADER + payload.len();
        }
        Ok(at)
    }

    fn corrupt(&self, offset: usize, reason: String) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), offset: offset as u64, reason }
    }

    fn apply_record(&mut self, payload: &[u8]) -> Result<(), String> {
        let mut r = Cursor { bytes: payload };
        let kind = r.u8("kind")?;
        match kind {
            KIND_ENTRY => {
                let entry = r.entry()?;
                r.end()?;
                self.check_append(entry.index).map_err(|e| e.to_string())?;
                self.push_entry(entry);
            }
            KIND_HARD_STATE => {
                self.hard_state = r.hard_state()?;
                r.end()?;
            }
            KIND_CONF_STATE => {
                self.conf_state = r.conf_state()?;
                r.end()?;
            }
            KIND_SNAPSHOT => {
                let mut meta = SnapshotMetadata {
                    index: r.u64("snapshot index")?,
                    term: r.u64("snapshot term")?,
                    ..Default::default()
                };
                meta.set_conf_state(r.conf_state()?);
                self.snapshot_data = r.bytes("snapshot data")?.to_vec();
                r.end()?;
                self.snapshot = meta;
                self.entries.clear();
            }
            other => return Err(format!("unknown record kind {other}")),
        }
        Ok(())
    }

    /// What `open` found: records replayed, torn bytes cut.
    pub fn open_report(&self) -> OpenReport {
        self.report
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The bytes of the last snapshot (empty if none), as given to `compact` or
    /// `apply_snapshot`.
    pub fn snapshot_data(&self) -> &[u8] {
        &self.snapshot_data
    }

    /// The last snapshot's metadata (index 0: none).
    pub fn snapshot_metadata(&self) -> &SnapshotMetadata {
        &self.snapshot
    }

    /// Starts a new cluster's log with its first configuration (every node of a static
    /// cluster is started with the same one); refused on a log that already has state.
    pub fn initialize(&mut self, conf_state: &ConfState) -> Result<(), StoreError> {
        self.live()?;
        if self.last() != 0
            || self.conf_state != ConfState::default()
            || self.hard_state != HardState::default()
        {
            return Err(StoreError::Refused("initialize on a log that already has state".into()));
        }
        self.set_conf_state(conf_state)?;
        self.sync()
    }

    /// Appends `entries` (contiguous, starting at or below `last_index + 1`, above the
    /// snapshot); entries from the first one's index on are replaced. Buffered: see `sync`.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        self.live()?;
        let Some(first) = entries.first() else { return Ok(()) };
        self.check_append(first.index)?;
        if let Some(pair) = entries.windows(2).find(|w| w[1].index != w[0].index + 1) {
            return Err(StoreError::Refused(format!(
                "entries {} and {} are not contiguous",
                pair[0].index, pair[1].index
            )));
        }
        for entry in entries {
            entry_record(&mut self.pending, entry)?;
            self.push_entry(entry.clone());
        }
        Ok(())
    }

    fn check_append(&self, index: u64) -> Result<(), StoreError> {
        if index <= self.snapshot.index {
            return Err(StoreError::Refused(format!(
                "entry {index} is at or below the snapshot at {}",
                self.snapshot.index
            )));
        }
        if index > self.last() + 1 {
            return Err(StoreError::Refused(format!("entry {index} leaves a gap after {}", self.last())));
        }
        Ok(())
    }

    /// Pushes an entry whose index `check_append` accepted, dropping the ones it replaces.
    fn push_entry(&mut self, entry: Entry) {
        self.entries.truncate((entry.index - self.snapshot.index - 1) as usize);
        self.entries.push(entry);
    }

    /// Records the hard state (term, vote, commit). Buffered: see `sync`.
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError> {
        self.live()?;
        hard_state_record(&mut self.pending, hs)?;
        self.hard_state = hs.clone();
        Ok(())
    }

    /// Records a new commit index (a `LightReady`'s). Buffered: a commit index lost in a crash
    /// is learnt again from the leader, so it needs no fsync of its own.
    pub fn set_commit(&mut self, commit: u64) -> Result<(), StoreError> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.set_hard_state(&hs)
    }

    /// Records the configuration (after a conf change is applied). Buffered: see `sync`.
    pub fn set_conf_state(&mut self, cs: &ConfState) -> Result<(), StoreError> {
        self.live()?;
        conf_state_record(&mut self.pending, cs)?;
        self.conf_state = cs.clone();
        Ok(())
    }

    /// Writes what the write calls buffered and fsyncs it (`fdatasync`); only then is it
    /// durable and may be acknowledged. No write, no fsync. A failure poisons the storage.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.live()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.pending).and_then(|()| self.file.sync_data());
        self.pending.clear();
        written.map_err(|source| {
            self.failed = true;
            StoreError::Io { what: "append and fsync", path: self.path.clone(), source }
        })
    }

    /// One `Ready`'s group commit: its entries and hard state, then one fsync.
    pub fn persist(&mut self, entries: &[Entry], hs: Option<&HardState>) -> Result<(), StoreError> {
        self.append(entries)?;
        if let Some(hs) = hs {
            self.set_hard_state(hs)?;
        }
        self.sync()
    }

    /// Compacts the log to a snapshot at `index` holding `data` (the state machine's state
    /// after applying `index`, which the caller has applied): entries up to `index` are
    /// dropped and the file is rewritten. The snapshot keeps the current conf state. At or
    /// below the last snapshot it does nothing; above the commit index it is refused.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        self.sync()?;
        if index <= self.snapshot.index {
            return Ok(());
        }
        if index > self.hard_state.commit || index > self.last() {
            return Err(StoreError::Refused(format!(
                "compact to {index} beyond the commit index {} or the last entry {}",
                self.hard_state.commit,
                self.last()
            )));
        }
        let term = self.entries[(index - self.snapshot.index - 1) as usize].term;
        self.entries.drain(..(index - self.snapshot.index) as usize);
        let mut meta = SnapshotMetadata { index, term, ..Default::default() };
        meta.set_conf_state(self.conf_state.clone());
        self.snapshot = meta;
        self.snapshot_data = data;
        self.rewrite()
    }

    /// Installs a snapshot received from the leader (a `Ready`'s): the log becomes the
    /// snapshot alone, with its conf state, commit at its index; the file is rewritten.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.sync()?;
        let meta = snapshot.get_metadata();
        if meta.index < self.first() {
            return Err(StoreError::Refused(format!(
                "snapshot at {} is older than the first entry {}",
                meta.index,
                self.first()
            )));
        }
        self.snapshot = meta.clone();
        self.snapshot_data = snapshot.data.to_vec();
        self.conf_state = meta.get_conf_state().clone();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = meta.index;
        self.entries.clear();
        self.rewrite()
    }

    /// Writes the whole state to a new file and renames it over the log (see the module doc).
    fn rewrite(&mut self) -> Result<(), StoreError> {
        let mut buf = file_header();
        if self.snapshot.index > 0 {
            let (meta, data) = (&self.snapshot, &self.snapshot_data);
            put_record(&mut buf, |b| {
                b.push(KIND_SNAPSHOT);
                b.extend_from_slice(&meta.index.to_le_bytes());
                b.extend_from_slice(&meta.term.to_le_bytes());
                put_conf_state(b, meta.get_conf_state());
                put_bytes(b, data);
            })?;
        }
        hard_state_record(&mut buf, &self.hard_state)?;
        conf_state_record(&mut buf, &self.conf_state)?;
        for entry in &self.entries {
            entry_record(&mut buf, entry)?;
        }
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_owned();
        let reopened = write_atomically(&dir, &self.path, &buf).and_then(|()| {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
                .map_err(io("reopen after rewrite", &self.path))?;
            file.seek(SeekFrom::End(0)).map_err(io("seek", &self.path))?;
            Ok(file)
        });
        match reopened {
            Ok(file) => {
                self.file = file;
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn live(&self) -> Result<(), StoreError> {
        if self.failed {
            Err(StoreError::Failed)
        } else {
            Ok(())
        }
    }

    fn first(&self) -> u64 {
        self.snapshot.index + 1
    }

    fn last(&self) -> u64 {
        self.snapshot.index + self.entries.len() as u64
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.live()?;
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.live()?;
        if low < self.first() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        // raft's contract is `high <= last_index + 1`; outside it is an error, not a panic.
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        let offset = self.first();
        let mut entries = self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.live()?;
        if idx == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.live()?;
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.live()?;
        Ok(self.last())
    }

    /// The last snapshot; one older than `request_index` (or none) is not ready yet: the
    /// state machine's driver must `compact` to a newer one first.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        self.live()?;
        if self.snapshot.index == 0 || self.snapshot.index < request_index {
            return Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(self.snapshot.clone());
        snapshot.data = self.snapshot_data.clone().into();
        Ok(snapshot)
    }
}

/// The error of file operation `what` on `path`, for `map_err`.
fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { what, path: path.to_owned(), source }
}

fn file_header() -> Vec<u8> {
    let mut buf = MAGIC.to_vec();
    buf.push(LOG_VERSION);
    buf
}

/// Writes `bytes` to `path` through a temporary file: write, fsync, rename, fsync the directory.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(TMP_FILE);
    let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_data().map_err(io("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename", path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory", dir))
}

/// The payload of the whole, checksummed record at `at`, if there is one.
fn whole_record(buf: &[u8], at: usize) -> Option<&[u8]> {
    let header = buf.get(at..at + RECORD_HEADER)?;
    let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    if crc32c(&header[..8]) != word(8) {
        return None;
    }
    let start = at + RECORD_HEADER;
    let payload = buf.get(start..start.checked_add(word(0) as usize)?)?;
    (crc32c(payload) == word(4)).then_some(payload)
}

/// Appends one record whose payload `body` writes, with its length and checksums.
fn put_record(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) -> Result<(), StoreError> {
    let at = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER]);
    body(out);
    let Ok(len) = u32::try_from(out.len() - at - RECORD_HEADER) else {
        out.truncate(at);
        return Err(StoreError::Refused("a record over 4 GiB".into()));
    };
    let crc = crc32c(&out[at + RECORD_HEADER..]);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    let header_crc = crc32c(&out[at..at + 8]);
    out[at + 8..at + 12].copy_from_slice(&header_crc.to_le_bytes());
    Ok(())
}

fn entry_record(out: &mut Vec<u8>, e: &Entry) -> Result<(), StoreError> {
    put_record(out, |b| {
        b.push(KIND_ENTRY);
        put_entry(b, e);
    })
}

fn hard_state_record(out: &mut Vec<u8>, hs: &HardState) -> Result<(), StoreError> {
    put_record(out, |b| {
        b.push(KIND_HARD_STATE);
        put_hard_state(b, hs);
    })
}

fn conf_state_record(out: &mut Vec<u8>, cs: &ConfState) -> Result<(), StoreError> {
    put_record(out, |b| {
        b.push(KIND_CONF_STATE);
        put_conf_state(b, cs);
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // A record's length is a u32 (checked by `put_record`), so each of its fields fits one.
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    out.extend_from_slice(&e.index.to_le_bytes());
    out.extend_from_slice(&e.term.to_le_bytes());
    out.push(match e.get_entry_type() {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    });
    out.push(u8::from(e.sync_log));
    put_bytes(out, &e.context);
    put_bytes(out, &e.data);
}

fn put_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    for v in [hs.term, hs.vote, hs.commit] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_conf_state(out: &mut Vec<u8>, cs: &ConfState) {
    for ids in [&cs.voters, &cs.learners, &cs.voters_outgoing, &cs.learners_next] {
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    out.push(u8::from(cs.auto_leave));
}

/// A reader over a record's payload; a short or malformed field is a reason string.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!("record ends inside its {field}"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, field: &str) -> Result<u8, String> {
        Ok(self.take(1, field)?[0])
    }

    fn u32(&mut self, field: &str) -> Result<u32, String> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, field: &str) -> Result<u64, String> {
        let mut word = [0; 8];
        word.copy_from_slice(self.take(8, field)?);
        Ok(u64::from_le_bytes(word))
    }

    fn bool(&mut self, field: &str) -> Result<bool, String> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("{field} byte is {b}")),
        }
    }

    fn bytes(&mut self, field: &str) -> Result<&'a [u8], String> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }

    fn end(&self) -> Result<(), String> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(format!("{n} bytes after the record's fields")),
        }
    }

    fn entry(&mut self) -> Result<Entry, String> {
        let mut e =
            Entry { index: self.u64("entry index")?, term: self.u64("entry term")?, ..Default::default() };
        e.set_entry_type(match self.u8("entry type")? {
            0 => EntryType::EntryNormal,
            1 => EntryType::EntryConfChange,
            2 => EntryType::EntryConfChangeV2,
            t => return Err(format!("unknown entry type {t}")),
        });
        e.sync_log = self.bool("sync_log")?;
        e.context = self.bytes("entry context")?.to_vec().into();
        e.data = self.bytes("entry data")?.to_vec().into();
        Ok(e)
    }

    fn hard_state(&mut self) -> Result<HardState, String> {
        Ok(HardState {
            term: self.u64("term")?,
            vote: self.u64("vote")?,
            commit: self.u64("commit")?,
            ..Default::default()
        })
    }

    fn conf_state(&mut self) -> Result<ConfState, String> {
        let mut lists: [Vec<u64>; 4] = Default::default();
        for list in &mut lists {
            let n = self.u32("conf state count")? as usize;
            // The count is bounded by the bytes left before anything is allocated.
            if n > self.bytes.len() / 8 {
                return Err("conf state count beyond the record".into());
            }
            for _ in 0..n {
                list.push(self.u64("conf state id")?);
            }
        }
        let [voters, learners, voters_outgoing, learners_next] = lists;
        Ok(ConfState {
            voters,
            learners,
            voters_outgoing,
            learners_next,
            auto_leave: self.bool("auto_leave")?,
            ..Default::default()
        })
    }
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
