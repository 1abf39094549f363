//! Evacuates one piece of evidence waiting with `wait_timeout`, then restores it as a `Future`
//! driven by a ten-line executor (no async runtime). Prints `ok` and exits 0 on success.
//! Usage: `houndpool-embedder-check <hound binary> <cold storage dir>`.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use houndpool::{ColdConfig, HoundBinary, Job, Pool, PoolConfig};

fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let hound = args.next().ok_or("usage: houndpool-embedder-check <hound> <dir>")?;
    let dir = args.next().ok_or("usage: houndpool-embedder-check <hound> <dir>")?;
    let pool = Pool::builder()
        .config(PoolConfig {
            hound_binary: HoundBinary::Path(hound.into()),
            cold: ColdConfig::Filesystem {
                root: dir.into(),
                prefix: "evidence/".into(),
            },
            ..PoolConfig::default()
        })
        .build()?;
    let evidence = b"GET /wp-login.php HTTP/1.1\r\n\r\n";
    let evacuate = pool.submit_tracked(&Job::evacuate(evidence))?;
    let id: houndpool::Uuid = evacuate.ticket().evidence_id;
    let stored = evacuate
        .wait_timeout(Duration::from_secs(60))
        .map_err(|_| "evacuate: no outcome within 60 s")?
        .into_result()?;
    if stored.key.is_none() {
        return Err("evacuate: no object key".into());
    }
    let restored = block_on(pool.submit_tracked(&Job::restore(id))?).into_result()?;
    if restored.payload.as_deref() != Some(&evidence[..]) {
        return Err("restore returned other bytes".into());
    }
    let stats = pool.shutdown(Duration::from_secs(10));
    if !stats.identity_holds() || stats.completed != 2 {
        return Err(format!("unexpected stats: {stats:?}").into());
    }
    println!("ok");
    Ok(())
}
