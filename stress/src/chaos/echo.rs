//! Echo bodies that name their job. Every `Noop` job of the chaos stream carries its index in
//! the stream and a fill byte derived from it, so that an echo which comes back short, in a
//! buffer still holding an earlier payload, or as another job's body is found. Counting
//! outcomes alone would pass all three as "completed": with recycled payload buffers, a
//! buffer handed out twice or a copy into the wrong buffer shows only in the bytes.
//!
//! Sizes cycle from 64 B to 100 KiB: up to 4 KiB a payload is a fresh allocation, above it a
//! buffer given back to the pool ([`houndpool::Pool::recycle`]) once the collecting side has
//! recycled anything.

/// Sizes the stream cycles through, by `index % 7`.
const SIZES: [usize; 7] = [64, 256, 1024, 4096, 64, 12 * 1024, 1024];
/// One job in this many is [`LARGE`] instead.
const LARGE_EVERY: u64 = 50;
/// A size in the pool's larger recycling classes (and above the caller's 64 KiB copy limit
/// when nothing was recycled yet).
const LARGE: usize = 100 * 1024;
/// Bytes of the index at the front of a body (little-endian `u64`).
const INDEX_LEN: usize = 8;

/// The body length of the job at `index`.
pub fn len_of(index: u64) -> usize {
    if index % LARGE_EVERY == LARGE_EVERY / 2 {
        LARGE
    } else {
        SIZES[(index % SIZES.len() as u64) as usize]
    }
}

/// The byte every body position after the index holds.
fn fill(index: u64) -> u8 {
    (index as u8).wrapping_mul(31) ^ 0xa5
}

/// Writes the body of the job at `index` into `out` (replacing what it held).
pub fn body(index: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&index.to_le_bytes());
    out.resize(len_of(index), fill(index));
}

/// The index an echo names, if it is exactly the body [`body`] writes for that index;
/// otherwise what is wrong with it.
pub fn read(echo: &[u8]) -> Result<u64, String> {
    let Some((head, rest)) = echo.split_first_chunk::<INDEX_LEN>() else {
        return Err(format!("{} bytes, shorter than an index", echo.len()));
    };
    let index = u64::from_le_bytes(*head);
    let want = len_of(index);
    if echo.len() != want {
        return Err(format!(
            "{} bytes where job index {index} sent {want}",
            echo.len()
        ));
    }
    match rest.iter().position(|&b| b != fill(index)) {
        None => Ok(index),
        Some(at) => Err(format!(
            "byte {} is {:#04x} where job index {index} sent {:#04x}",
            at + INDEX_LEN,
            rest[at],
            fill(index)
        )),
    }
}

/// What the collecting thread saw of the echoes.
#[derive(Debug, Default)]
pub struct Echoes {
    /// (job id, index its echo names) of every well-formed echo.
    pub named: Vec<(u64, u64)>,
    /// Echoes that were not a body [`body`] writes (or a completed Noop without payload).
    pub malformed: u64,
    /// The first few of them, described.
    pub examples: Vec<String>,
}

impl Echoes {
    /// Records the payload of job `job_id`'s completed Noop outcome.
    pub fn record(&mut self, job_id: u64, payload: Option<&[u8]>) {
        match payload.map(read) {
            Some(Ok(index)) => self.named.push((job_id, index)),
            other => {
                self.malformed += 1;
                if self.examples.len() < 4 {
                    let why = match other {
                        Some(Err(why)) => why,
                        _ => "no payload".into(),
                    };
                    self.examples.push(format!("job {job_id}: {why}"));
                }
            }
        }
    }

    /// Compares the echoes with what was sent: `sent` holds (job id, index) of every accepted
    /// Noop job. Returns one line per kind of mismatch (empty when every echo is its own
    /// job's body).
    pub fn reconcile(&self, mut sent: Vec<(u64, u64)>) -> Vec<String> {
        let mut out = Vec::new();
        if self.malformed > 0 {
            out.push(format!(
                "{} malformed echoes (e.g. {})",
                self.malformed,
                self.examples.join("; ")
            ));
        }
        sent.sort_unstable();
        let (mut swapped, mut example) = (0u64, None);
        for &(job_id, named) in &self.named {
            let expected = sent
                .binary_search_by_key(&job_id, |&(id, _)| id)
                .ok()
                .map(|at| sent[at].1);
            if expected != Some(named) {
                swapped += 1;
                example.get_or_insert((job_id, named, expected));
            }
        }
        if let Some((job_id, named, expected)) = example {
            let sent_as = match expected {
                Some(i) => format!("sent as index {i}"),
                None => "never sent as a Noop".into(),
            };
            out.push(format!(
                "{swapped} echoes carry another job's body (e.g. job {job_id} ({sent_as}) \
                 came back with index {named}'s)"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_reads_back_as_its_index_at_every_size() {
        let mut b = Vec::new();
        for i in [0u64, 1, 5, 25, 75, 1_000_003, u64::MAX] {
            body(i, &mut b);
            assert_eq!(b.len(), len_of(i));
            assert_eq!(read(&b), Ok(i));
        }
        assert_eq!(len_of(25), LARGE);
        assert!(
            (0..7).any(|i| len_of(i) > 4096),
            "a size in the recycling classes"
        );
    }

    #[test]
    fn short_stale_and_foreign_bytes_are_told_apart() {
        let mut b = Vec::new();
        body(5, &mut b);
        let short = read(&b[..b.len() - 1]).unwrap_err();
        assert!(short.contains("where job index 5 sent"), "{short}");
        assert!(read(&b[..3]).unwrap_err().contains("shorter than an index"));
        // A buffer that held job 12's body (same length as job 5's) with job 5's index on top.
        let mut stale = Vec::new();
        body(12, &mut stale);
        stale[..INDEX_LEN].copy_from_slice(&5u64.to_le_bytes());
        assert_eq!(len_of(12), len_of(5));
        let why = read(&stale).unwrap_err();
        assert!(why.contains("byte 8"), "{why}");
    }

    #[test]
    fn reconcile_finds_echoes_of_the_wrong_job() {
        let mut e = Echoes::default();
        let mut b = Vec::new();
        for (job, index) in [(10u64, 0u64), (11, 1), (12, 2)] {
            body(index, &mut b);
            e.record(job, Some(&b));
        }
        assert!(e.reconcile(vec![(12, 2), (10, 0), (11, 1)]).is_empty());
        let v = e.reconcile(vec![(10, 0), (11, 2), (12, 1)]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].starts_with("2 echoes carry another job's body"),
            "{v:?}"
        );
        let v = e.reconcile(vec![(10, 0), (11, 1)]);
        assert!(v[0].contains("never sent as a Noop"), "{v:?}");
        e.record(13, None);
        e.record(14, Some(&[1, 2]));
        let v = e.reconcile(vec![(10, 0), (11, 1), (12, 2)]);
        assert!(v[0].starts_with("2 malformed echoes"), "{v:?}");
        assert!(v[0].contains("job 13: no payload"), "{v:?}");
    }
}
