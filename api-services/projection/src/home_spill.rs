//! A rebuild's homes, kept on disk while the replay runs: each home operation is appended to the file of
//! its owner's key range, and when the replay ends each range is folded in memory on its own and given up
//! as whole homes, one range at a time. The rebuild's memory for homes is then one range's homes, whatever
//! the number of users. The files live in a directory of their own under the temporary directory
//! (`TMPDIR`), removed when the spill is dropped.

use crate::target::ProjectionError;
use hashbrown::HashMap;
use std::collections::VecDeque;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::PathBuf;

/// A home: `(score, post id)` ascending. Scores are the posts' positions, so one post always has the same
/// score (the planner gives it its publication's position wherever it fans it).
pub(crate) type Home = VecDeque<(i64, uuid::Bytes)>;

/// What the planner does to a home, in 16-byte post ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HomeOp {
    Add(i64, uuid::Bytes),
    KeepTop(u32),
    Remove(uuid::Bytes),
    Clear,
}

impl HomeOp {
    fn encode(&self, owner: &str, out: &mut impl Write) -> std::io::Result<()> {
        let len = u16::try_from(owner.len()).map_err(|_| std::io::Error::other("owner id too long"))?;
        let tag: u8 = match self {
            HomeOp::Add(..) => 1,
            HomeOp::KeepTop(_) => 2,
            HomeOp::Remove(_) => 3,
            HomeOp::Clear => 4,
        };
        out.write_all(&[tag])?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(owner.as_bytes())?;
        match self {
            HomeOp::Add(score, id) => {
                out.write_all(&score.to_le_bytes())?;
                out.write_all(id)
            }
            HomeOp::KeepTop(keep) => out.write_all(&keep.to_le_bytes()),
            HomeOp::Remove(id) => out.write_all(id),
            HomeOp::Clear => Ok(()),
        }
    }

    /// The next record, or `None` at the end of the file.
    fn decode(input: &mut impl Read, owner: &mut String) -> std::io::Result<Option<HomeOp>> {
        let mut tag = [0u8; 1];
        match input.read_exact(&mut tag) {
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            other => other?,
        }
        let len = u16::from_le_bytes(take(input)?);
        let mut name = vec![0u8; usize::from(len)];
        input.read_exact(&mut name)?;
        owner.clear();
        owner.push_str(std::str::from_utf8(&name).map_err(std::io::Error::other)?);
        Ok(Some(match tag[0] {
            1 => HomeOp::Add(i64::from_le_bytes(take(input)?), take(input)?),
            2 => HomeOp::KeepTop(u32::from_le_bytes(take(input)?)),
            3 => HomeOp::Remove(take(input)?),
            4 => HomeOp::Clear,
            t => return Err(std::io::Error::other(format!("unknown home record {t}"))),
        }))
    }
}

fn take<const N: usize>(input: &mut impl Read) -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    input.read_exact(&mut b)?;
    Ok(b)
}

/// Apply one operation to a range's homes (an emptied home disappears, as in Redis).
pub(crate) fn fold(homes: &mut HashMap<String, Home>, owner: &str, op: HomeOp) {
    let home = homes.entry_ref(owner).or_default();
    match op {
        HomeOp::Add(score, id) => {
            let entry = (score, id);
            if home.back().is_none_or(|last| *last < entry) {
                home.push_back(entry);
            } else if let Err(at) = home.binary_search(&entry) {
                home.insert(at, entry);
            }
        }
        HomeOp::KeepTop(keep) => {
            while home.len() > keep as usize {
                home.pop_front();
            }
        }
        HomeOp::Remove(id) => home.retain(|(_, p)| *p != id),
        HomeOp::Clear => home.clear(),
    }
    if home.is_empty() {
        homes.remove(owner);
    }
}

fn spill_error(e: std::io::Error) -> ProjectionError {
    ProjectionError::Unavailable(format!("the rebuild's home files: {e}"))
}

/// The directory of a spill; removed with everything in it when dropped.
#[derive(Debug)]
struct SpillDir(PathBuf);

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug)]
pub(crate) struct HomeSpill {
    dir: SpillDir,
    files: Vec<BufWriter<File>>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl HomeSpill {
    pub(crate) fn new(ranges: usize) -> Result<Self, ProjectionError> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "socialnet-rebuild-{}-{}",
            std::process::id(),
            nanos.as_nanos()
        ));
        std::fs::create_dir_all(&path).map_err(spill_error)?;
        let dir = SpillDir(path);
        let files = (0..ranges.max(1))
            .map(|r| {
                File::create(dir.0.join(format!("homes-{r}"))).map(|f| BufWriter::with_capacity(1 << 16, f))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(spill_error)?;
        Ok(Self { dir, files, hasher: hashbrown::DefaultHashBuilder::default() })
    }

    pub(crate) fn push(&mut self, owner: &str, op: HomeOp) -> Result<(), ProjectionError> {
        let range = (self.hasher.hash_one(owner) % self.files.len() as u64) as usize;
        op.encode(owner, &mut self.files[range]).map_err(spill_error)
    }

    /// The homes, one key range at a time (each range folded only when it is reached).
    pub(crate) fn into_ranges(self) -> Result<Ranges, ProjectionError> {
        let count = self.files.len();
        for f in self.files {
            f.into_inner().map_err(|e| spill_error(e.into_error()))?;
        }
        Ok(Ranges { dir: self.dir, next: 0, count })
    }
}

/// Each key range's homes, folded from its file.
#[derive(Debug)]
pub(crate) struct Ranges {
    dir: SpillDir,
    next: usize,
    count: usize,
}

impl Ranges {
    fn fold_range(&self, range: usize) -> Result<HashMap<String, Home>, ProjectionError> {
        let path = self.dir.0.join(format!("homes-{range}"));
        let mut input = BufReader::with_capacity(1 << 16, File::open(&path).map_err(spill_error)?);
        let mut homes = HashMap::new();
        let mut owner = String::new();
        while let Some(op) = HomeOp::decode(&mut input, &mut owner).map_err(spill_error)? {
            fold(&mut homes, &owner, op);
        }
        drop(input);
        let _ = std::fs::remove_file(path);
        Ok(homes)
    }
}

impl Iterator for Ranges {
    type Item = Result<HashMap<String, Home>, ProjectionError>;

    fn next(&mut self) -> Option<Self::Item> {
        (self.next < self.count).then(|| {
            self.next += 1;
            self.fold_range(self.next - 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written_and_ranges_split_the_owners() {
        let ops = [
            ("u1", HomeOp::Add(7, [1; 16])),
            ("u2", HomeOp::Add(9, [2; 16])),
            ("u1", HomeOp::Add(8, [3; 16])),
            ("u1", HomeOp::KeepTop(1)),
            ("u3", HomeOp::Add(1, [4; 16])),
            ("u3", HomeOp::Remove([4; 16])),
            ("u2", HomeOp::Add(10, [5; 16])),
            ("u2", HomeOp::Clear),
            ("u4", HomeOp::Add(3, [6; 16])),
        ];
        let mut spill = HomeSpill::new(3).unwrap();
        let dir = spill.dir.0.clone();
        for (owner, op) in ops {
            spill.push(owner, op).unwrap();
        }
        let ranges: Vec<HashMap<String, Home>> = spill.into_ranges().unwrap().map(Result::unwrap).collect();
        assert_eq!(ranges.len(), 3);
        let mut all: Vec<(String, Vec<(i64, uuid::Bytes)>)> =
            ranges.into_iter().flatten().map(|(o, h)| (o, h.into_iter().collect())).collect();
        all.sort();
        assert_eq!(all, vec![("u1".into(), vec![(8, [3; 16])]), ("u4".into(), vec![(3, [6; 16])])]);
        assert!(!dir.exists(), "the files go with the spill");
    }

    #[test]
    fn a_torn_file_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        HomeOp::Add(1, [9; 16]).encode("u1", &mut buf).unwrap();
        buf.truncate(buf.len() - 3);
        let mut owner = String::new();
        assert!(HomeOp::decode(&mut buf.as_slice(), &mut owner).is_err());
        assert!(HomeOp::decode(&mut [].as_slice(), &mut owner).unwrap().is_none());
    }
}
