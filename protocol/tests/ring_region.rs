//! Region creation, sealing, header layout (golden) and the hound's validation of what it maps.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use houndpool_protocol::region::{
    get_seals, offsets, HoundRegions, HoundState, RegionLayout, SupervisorRegions,
    COMPLETION_SEALS, REGION_HEADER_LEN, REQUEST_SEALS,
};
use houndpool_protocol::ProtocolError;

const LAYOUT: RegionLayout = RegionLayout {
    request_capacity: 4096,
    completion_capacity: 8192,
};

fn dup(fd: BorrowedFd<'_>) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid borrowed fd; touches no memory.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    assert!(r >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: `r` is a fresh descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(r) }
}

fn file(fd: BorrowedFd<'_>) -> std::fs::File {
    std::fs::File::from(dup(fd))
}

fn read_u64(f: &std::fs::File, off: usize) -> u64 {
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off as u64).unwrap();
    u64::from_le_bytes(b)
}

fn read_u32(f: &std::fs::File, off: usize) -> u32 {
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, off as u64).unwrap();
    u32::from_le_bytes(b)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn mmap(fd: BorrowedFd<'_>, len: usize, prot: i32) -> Result<*mut libc::c_void, i32> {
    // SAFETY: a fresh mapping chosen by the kernel; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(p)
    }
}

fn munmap(p: *mut libc::c_void, len: usize) {
    // SAFETY: `p`/`len` is a mapping this test made and no longer uses.
    assert_eq!(unsafe { libc::munmap(p, len) }, 0);
}

#[test]
fn offsets_are_as_documented() {
    use offsets::*;
    assert_eq!(REGION_HEADER_LEN, 4096);
    assert_eq!(
        [
            MAGIC,
            VERSION,
            RESERVED,
            REQ_REQUEST_CAPACITY,
            REQ_COMPLETION_CAPACITY
        ],
        [0, 8, 12, 16, 24]
    );
    assert_eq!(
        [
            REQ_TAIL,
            REQ_CMP_HEAD,
            REQ_SUPERVISOR_SLEEPING,
            REQ_RELEASED
        ],
        [64, 128, 192, 256]
    );
    assert_eq!(
        [
            CMP_COMPLETION_CAPACITY,
            CMP_TAIL,
            CMP_HOUND_SLEEPING,
            CMP_STATE,
            CMP_HEARTBEAT,
            CMP_JOBS_DONE,
            CMP_CURRENT_JOB
        ],
        [16, 64, 128, 192, 200, 208, 216]
    );
}

/// Golden test over the actual bytes of the files: every field is where the shared-memory
/// section of docs/PROTOCOL.md says, with the documented encoding, and each side's operations
/// move the documented field.
#[test]
fn header_bytes_golden() {
    let sup = SupervisorRegions::create(LAYOUT, "hp-golden").unwrap();
    assert_eq!(sup.layout(), LAYOUT);
    let req = file(sup.request_fd());
    let cmp = file(sup.completion_fd());
    assert_eq!(req.metadata().unwrap().len(), 4096 + 4096);
    assert_eq!(cmp.metadata().unwrap().len(), 4096 + 8192);

    let mut head = [0u8; 32];
    req.read_exact_at(&mut head, 0).unwrap();
    let mut expected = [0u8; 32];
    expected[..8].copy_from_slice(b"HPREQRGN");
    expected[8..12].copy_from_slice(&1u32.to_le_bytes());
    expected[16..24].copy_from_slice(&4096u64.to_le_bytes());
    expected[24..32].copy_from_slice(&8192u64.to_le_bytes());
    assert_eq!(head, expected);
    cmp.read_exact_at(&mut head, 0).unwrap();
    let mut expected = [0u8; 32];
    expected[..8].copy_from_slice(b"HPCMPRGN");
    expected[8..12].copy_from_slice(&1u32.to_le_bytes());
    expected[16..24].copy_from_slice(&8192u64.to_le_bytes());
    assert_eq!(head, expected);

    let hound = HoundRegions::map(dup(sup.request_fd()), dup(sup.completion_fd())).unwrap();
    assert_eq!(hound.layout(), LAYOUT);
    let (mut rr, mut cw, st) = hound.split();
    let (mut rw, mut cr) = sup.split();

    // Supervisor push: req_tail @64, record header + payload @4096.
    let pos = rw.try_push(&[b"hello"]).unwrap().unwrap();
    assert_eq!((pos.start, pos.end), (0, 16));
    assert_eq!(read_u64(&req, 64), 16);
    let mut rec = [0u8; 16];
    req.read_exact_at(&mut rec, 4096).unwrap();
    assert_eq!(&rec[..4], &5u32.to_le_bytes());
    assert_eq!(&rec[4..8], b"1CER"); // TAG_RECORD 0x52454331 little-endian
    assert_eq!(&rec[8..13], b"hello");
    assert_eq!(&rec[13..], &[0, 0, 0]);
    assert_eq!(rr.peek().unwrap(), Some(&b"hello"[..]));
    rr.advance();
    assert_eq!(rr.peek().unwrap(), None);

    // Hound push: cmp_tail @64 of the completion region.
    assert!(cw.try_push(&[b"done", b"!"]).unwrap());
    assert_eq!(read_u64(&cmp, 64), 16);
    let mut out = Vec::new();
    assert!(cr.pop(&mut out).unwrap());
    assert_eq!(out, b"done!");
    assert_eq!(read_u64(&req, 128), 16, "cmp_head @128");
    cr.release_requests(pos.end);
    assert_eq!(read_u64(&req, 256), 16, "req_released @256");

    // Sleeping flags and status.
    cr.announce_sleep();
    assert_eq!(read_u32(&req, 192), 1);
    assert!(cw.supervisor_sleeping());
    cr.cancel_sleep();
    assert_eq!(read_u32(&req, 192), 0);
    st.announce_sleep();
    assert_eq!(read_u32(&cmp, 128), 1);
    assert!(rw.hound_sleeping());
    st.cancel_sleep();
    assert_eq!(read_u32(&cmp, 128), 0);
    assert!(!rw.hound_sleeping());
    st.set_state(HoundState::Busy);
    st.beat();
    st.beat();
    st.job_done();
    st.set_current_job(0xdead_beef);
    assert_eq!(read_u32(&cmp, 192), 2);
    assert_eq!(read_u64(&cmp, 200), 2);
    assert_eq!(read_u64(&cmp, 208), 1);
    assert_eq!(read_u64(&cmp, 216), 0xdead_beef);
    let s = cr.status();
    assert_eq!(
        (s.state, s.heartbeat, s.jobs_done, s.current_job),
        (2, 2, 1, 0xdead_beef)
    );
}

#[test]
fn seals_hold() {
    let sup = SupervisorRegions::create(LAYOUT, "hp-seals").unwrap();
    let req_len = 4096 + 4096;
    let cmp_len = 4096 + 8192;
    assert_eq!(get_seals(sup.request_fd()).unwrap(), REQUEST_SEALS);
    assert_eq!(get_seals(sup.completion_fd()).unwrap(), COMPLETION_SEALS);

    // Request region: no writable shared mapping.
    let e = mmap(
        sup.request_fd(),
        req_len,
        libc::PROT_READ | libc::PROT_WRITE,
    )
    .unwrap_err();
    assert_eq!(e, libc::EPERM);
    // A read-only mapping cannot be made writable.
    let p = mmap(sup.request_fd(), req_len, libc::PROT_READ).unwrap();
    // SAFETY: `p` is our own mapping of `req_len` bytes.
    let r = unsafe { libc::mprotect(p, req_len, libc::PROT_READ | libc::PROT_WRITE) };
    let e = errno();
    assert_eq!(r, -1);
    assert!(e == libc::EACCES || e == libc::EPERM, "errno {e}");
    munmap(p, req_len);
    // No write(2) and no hole punching either.
    let req = file(sup.request_fd());
    let err = req.write_at(b"x", 4096).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    // SAFETY: fallocate on a valid fd; touches no memory.
    let r = unsafe {
        libc::fallocate(
            req.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            4096,
            4096,
        )
    };
    assert_eq!((r, errno()), (-1, libc::EPERM));

    // Neither fd can change size or take more (or fewer) seals.
    for (fd, len) in [(sup.request_fd(), req_len), (sup.completion_fd(), cmp_len)] {
        let f = file(fd);
        for new_len in [0, len as u64 - 4096, len as u64 + 4096] {
            let err = f.set_len(new_len).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EPERM), "ftruncate {new_len}");
        }
        // SAFETY: fcntl on a valid fd with an int argument.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_WRITE) };
        assert_eq!((r, errno()), (-1, libc::EPERM));
        assert_eq!(f.metadata().unwrap().len(), len as u64);
    }

    // The completion region stays writable through a shared mapping (the hound needs that).
    let p = mmap(
        sup.completion_fd(),
        cmp_len,
        libc::PROT_READ | libc::PROT_WRITE,
    )
    .unwrap();
    munmap(p, cmp_len);

    // The supervisor's own mapping, made before sealing, stays writable.
    let (mut w, _r) = sup.split();
    assert!(w.try_push(&[b"still writable"]).unwrap().is_some());
}

fn expect_invalid(r: Result<HoundRegions, ProtocolError>, needle: &str) {
    match r {
        Err(ProtocolError::InvalidRegion { reason }) => {
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
        }
        other => panic!("expected InvalidRegion({needle}), got {other:?}"),
    }
}

/// A sealed memfd with `contents` at offset 0 and total size `len`.
fn fake_region(contents: &[u8], len: u64, seals: i32) -> OwnedFd {
    let name = c"hp-fake";
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0);
    // SAFETY: fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let f = file(fd.as_fd());
    f.set_len(len).unwrap();
    f.write_all_at(contents, 0).unwrap();
    // SAFETY: fcntl on a valid fd with an int argument.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    assert_eq!(rc, 0);
    fd
}

fn header(magic: &[u8; 8], version: u32, caps: &[u64]) -> Vec<u8> {
    let mut h = vec![0u8; 32];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    for (i, c) in caps.iter().enumerate() {
        h[16 + 8 * i..24 + 8 * i].copy_from_slice(&c.to_le_bytes());
    }
    h
}

/// One fake region: header bytes, file size, seals.
struct Side {
    h: Vec<u8>,
    len: u64,
    seals: i32,
}

#[test]
fn hound_map_validates() {
    let good_req = || header(b"HPREQRGN", 1, &[4096, 4096]);
    let good_cmp = || header(b"HPCMPRGN", 1, &[4096]);
    let ok = HoundRegions::map(
        fake_region(&good_req(), 8192, REQUEST_SEALS),
        fake_region(&good_cmp(), 8192, COMPLETION_SEALS),
    );
    assert!(ok.is_ok(), "{ok:?}");

    let req = |h: Vec<u8>, len: u64, seals: i32| Side { h, len, seals };
    let cmp = req;
    let good_r = || req(good_req(), 8192, REQUEST_SEALS);
    let good_c = || cmp(good_cmp(), 8192, COMPLETION_SEALS);
    let cases: Vec<(Side, Side, &str)> = vec![
        (
            req(header(b"HPREQRGX", 1, &[4096, 4096]), 8192, REQUEST_SEALS),
            good_c(),
            "request region magic",
        ),
        (
            req(header(b"HPREQRGN", 2, &[4096, 4096]), 8192, REQUEST_SEALS),
            good_c(),
            "request region version",
        ),
        (
            req(header(b"HPREQRGN", 1, &[4000, 4096]), 8192, REQUEST_SEALS),
            good_c(),
            "request ring capacity",
        ),
        (
            req(
                header(b"HPREQRGN", 1, &[4096, u64::MAX]),
                8192,
                REQUEST_SEALS,
            ),
            good_c(),
            "completion ring capacity",
        ),
        (
            good_r(),
            cmp(header(b"HPREQRGN", 1, &[4096]), 8192, COMPLETION_SEALS),
            "completion region magic",
        ),
        (
            good_r(),
            cmp(header(b"HPCMPRGN", 1, &[8192]), 8192, COMPLETION_SEALS),
            "completion region says capacity",
        ),
        (
            req(good_req(), 4096 + 8192, REQUEST_SEALS),
            good_c(),
            "request region file is",
        ),
        (
            good_r(),
            cmp(good_cmp(), 4096 + 16, COMPLETION_SEALS),
            "completion region file is",
        ),
        (
            req(good_req(), 8192, COMPLETION_SEALS),
            good_c(),
            "request region seals",
        ),
        (
            good_r(),
            cmp(good_cmp(), 8192, libc::F_SEAL_GROW),
            "completion region seals",
        ),
    ];
    for (r, c, needle) in cases {
        expect_invalid(
            HoundRegions::map(
                fake_region(&r.h, r.len, r.seals),
                fake_region(&c.h, c.len, c.seals),
            ),
            needle,
        );
    }
    // A file shorter than the header.
    expect_invalid(
        HoundRegions::map(
            fake_region(b"HPREQ", 5, REQUEST_SEALS),
            fake_region(&good_cmp(), 8192, COMPLETION_SEALS),
        ),
        "cannot read the request region header",
    );
    // Not a memfd at all (no seals possible): a pipe.
    let mut fds = [0; 2];
    // SAFETY: room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors owned by nobody else.
    let (a, _b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let r = HoundRegions::map(a, fake_region(&good_cmp(), 8192, COMPLETION_SEALS));
    assert!(matches!(r, Err(ProtocolError::Os { .. })), "{r:?}");
}

/// The collector's non-consuming view: the supervisor's sleeping flag it sets is the one the
/// hound reads, the hound's counters are the reader's, and `has_pending` follows the consumer
/// position the reader publishes (a record consumed on another thread is no longer pending).
#[test]
fn a_watch_sees_what_the_reader_publishes() {
    let sup = SupervisorRegions::create(LAYOUT, "hp-test-watch").unwrap();
    let hound = HoundRegions::map(dup(sup.request_fd()), dup(sup.completion_fd())).unwrap();
    let (_w, mut reader) = sup.split();
    let (_hr, mut hw, status) = hound.split();
    let watch = reader.watch();
    assert!(!hw.supervisor_sleeping());
    watch.announce_sleep();
    assert!(hw.supervisor_sleeping());
    watch.cancel_sleep();
    assert!(!hw.supervisor_sleeping());
    status.set_state(HoundState::Busy);
    assert_eq!(watch.status().state, HoundState::Busy as u32);
    assert_eq!(watch.status(), reader.status());
    assert!(!watch.has_pending().unwrap());
    assert!(hw.try_push(&[b"one"]).unwrap());
    assert!(hw.try_push(&[b"two"]).unwrap());
    assert!(watch.has_pending().unwrap());
    // The watch moves to another thread (as it does to the collector) while the reader
    // consumes here.
    let watch = std::thread::spawn(move || {
        assert!(watch.has_pending().unwrap());
        watch
    })
    .join()
    .unwrap();
    let mut out = Vec::new();
    // The next record's length, without consuming it.
    assert_eq!(reader.next_len().unwrap(), Some(3));
    assert_eq!(reader.next_len().unwrap(), Some(3));
    assert!(reader.pop(&mut out).unwrap());
    assert_eq!(out, b"one");
    assert!(watch.has_pending().unwrap());
    assert!(reader.pop(&mut out).unwrap());
    assert!(!watch.has_pending().unwrap());
    assert_eq!(reader.next_len().unwrap(), None);
}
