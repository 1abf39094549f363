//! Reading each section's settings out of the raw values, with the checks that span keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use houndpool_protocol::control::{Layer, LayerMode, SandboxPolicy};
use toml::Value;

use super::types::*;
use super::values::{invalid, Values};
use crate::daemon::DaemonError;
use crate::keys::{self, KEYS};

pub(super) fn pool_settings(v: &Values) -> Result<PoolSettings, DaemonError> {
    let size = {
        let e = v.get("pool", "size");
        let info = &keys::POOL_SIZE;
        match &e.value {
            Value::String(s) if info.choices.contains(&s.as_str()) => PoolSizeSetting::Auto,
            Value::Integer(n)
                if u64::try_from(*n).is_ok_and(|n| info.range.is_some_and(|r| r.contains(n))) =>
            {
                PoolSizeSetting::Fixed(*n as usize)
            }
            _ => return Err(Values::bad("pool", "size", &e, info.allowed())),
        }
    };
    let exhausted = match v.choice("pool", "exhausted")? {
        "drop" => ExhaustedSetting::Drop,
        "escalate" => ExhaustedSetting::Escalate,
        _ => ExhaustedSetting::Defer,
    };
    let hound_binary = v.string("pool", "hound_binary")?;
    Ok(PoolSettings {
        size,
        host_reserve_bytes: v.int("pool", "host_reserve_bytes")?,
        exhausted,
        defer_limit: v.int("pool", "defer_limit")? as usize,
        max_evidence_bytes: v.int("pool", "max_evidence_bytes")? as usize,
        max_output_bytes: v.int("pool", "max_output_bytes")? as usize,
        gzip_level: v.int("pool", "gzip_level")? as u8,
        job_timeout: v.ms("pool", "job_timeout_ms")?,
        max_in_flight_per_hound: v.int("pool", "max_in_flight_per_hound")? as usize,
        outcome_capacity: v.int("pool", "outcome_capacity")? as usize,
        hound_spin: v.us("pool", "hound_spin_us")?,
        hound_idle_poll: v.ms("pool", "hound_idle_poll_ms")?,
        collector_spin: v.us("pool", "collector_spin_us")?,
        start_timeout: v.ms("pool", "start_timeout_ms")?,
        hound_memory_budget_bytes: v.int("pool", "hound_memory_budget_bytes")?,
        hound_binary: (!hound_binary.is_empty()).then(|| PathBuf::from(hound_binary)),
        hound_stderr: v.boolean("pool", "hound_stderr")?,
        prestart: v.boolean("pool", "prestart")?,
    })
}

/// Reads the AWS variables: the access key and secret are required (non-empty).
pub(super) fn s3_credentials(env: &BTreeMap<String, String>) -> Result<S3Credentials, DaemonError> {
    let need = |name: &str| match env.get(name) {
        Some(v) if !v.is_empty() => Ok(v.clone()),
        _ => Err(invalid(
            name.to_string(),
            "(unset)".into(),
            "must be set (non-empty) when cold.backend = \"s3\"",
        )),
    };
    Ok(S3Credentials {
        access_key: need("AWS_ACCESS_KEY_ID")?,
        secret_key: need("AWS_SECRET_ACCESS_KEY")?,
        session_token: env
            .get("AWS_SESSION_TOKEN")
            .filter(|t| !t.is_empty())
            .cloned(),
    })
}

pub(super) fn cold_settings(
    v: &Values,
    env: &BTreeMap<String, String>,
) -> Result<ColdSettings, DaemonError> {
    let backend = v.choice("cold", "backend")?;
    let path = v.string("cold", "path")?;
    let prefix = v.string("cold", "prefix")?;
    let endpoint = v.string("cold", "endpoint")?;
    let bucket = v.string("cold", "bucket")?;
    let region = v.string("cold", "region")?;
    let path_style = v.boolean("cold", "path_style")?;
    let spool_dir = v.string("cold", "spool_dir")?;
    let ca_file = v.string("cold", "ca_file")?;
    let resolve_interval_ms = v.int("cold", "resolve_interval_ms")?;
    let s3_concurrency = v.int("cold", "s3_concurrency")?;
    let spool_limit_bytes = v.int("cold", "spool_limit_bytes")?;
    if !prefix.is_empty() {
        if let Err(e) = houndpool_cold::validate_key(&format!("{prefix}x")) {
            let e2 = v.get("cold", "prefix");
            return Err(Values::bad(
                "cold",
                "prefix",
                &e2,
                format!("empty, or a relative key prefix ({e})"),
            ));
        }
    }
    let backend = match backend {
        "none" => ColdBackend::None,
        "filesystem" => {
            if path.is_empty() {
                let e = v.get("cold", "path");
                return Err(Values::bad(
                    "cold",
                    "path",
                    &e,
                    "a directory path (required for backend = \"filesystem\")",
                ));
            }
            ColdBackend::Filesystem {
                path: PathBuf::from(path),
            }
        }
        _ => {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                || url::Url::parse(&endpoint).is_err()
            {
                let e = v.get("cold", "endpoint");
                return Err(Values::bad(
                    "cold",
                    "endpoint",
                    &e,
                    "an http:// or https:// URL (required for backend = \"s3\")",
                ));
            }
            if bucket.is_empty()
                || bucket.len() > 63
                || !bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
            {
                let e = v.get("cold", "bucket");
                return Err(Values::bad(
                    "cold",
                    "bucket",
                    &e,
                    "a bucket name of 1 to 63 lowercase letters, digits, '-' and '.' (required for backend = \"s3\")",
                ));
            }
            let spool_dir = if spool_dir.is_empty() {
                None
            } else if Path::new(&spool_dir).is_absolute() {
                Some(PathBuf::from(spool_dir))
            } else {
                let e = v.get("cold", "spool_dir");
                return Err(Values::bad(
                    "cold",
                    "spool_dir",
                    &e,
                    "empty, or an absolute directory path",
                ));
            };
            let region = [
                Some(region),
                env.get("AWS_REGION").cloned(),
                env.get("AWS_DEFAULT_REGION").cloned(),
            ]
            .into_iter()
            .flatten()
            .find(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".to_string());
            ColdBackend::S3(S3Settings {
                endpoint,
                bucket,
                region,
                path_style,
                spool_dir,
                spool_limit_bytes,
                credentials: s3_credentials(env)?,
                ca_file: (!ca_file.is_empty()).then(|| PathBuf::from(ca_file)),
                resolve_interval: std::time::Duration::from_millis(resolve_interval_ms),
                concurrency: u16::try_from(s3_concurrency).unwrap_or(64),
            })
        }
    };
    let fs_commit = match v.choice("cold", "fs_commit")? {
        "per-file" => houndpool_protocol::control::FsCommit::PerFile,
        _ => houndpool_protocol::control::FsCommit::Journal,
    };
    Ok(ColdSettings {
        backend,
        prefix,
        fs_commit,
    })
}

pub(super) fn sandbox_settings(v: &Values) -> Result<SandboxPolicy, DaemonError> {
    let mut layers = Vec::with_capacity(Layer::ALL.len());
    for layer in Layer::ALL {
        // `KEYS` has one [sandbox] key per layer, named by `Layer::name` (checked by a test).
        let key = KEYS
            .iter()
            .find(|k| k.section == "sandbox" && k.key == layer.name())
            .map(|k| k.key)
            .unwrap_or("?");
        let mode = match v.choice("sandbox", key)? {
            "required" => LayerMode::Required,
            "off" => LayerMode::Off,
            "auto" => auto_namespaces(),
            _ => LayerMode::BestEffort,
        };
        layers.push((layer, mode));
    }
    Ok(SandboxPolicy { layers })
}

/// What `[sandbox] namespaces = "auto"` means here: required when this process runs as root
/// (uid 0 can always unshare), best-effort otherwise.
pub(super) fn auto_namespaces() -> LayerMode {
    if nix::unistd::geteuid().is_root() {
        LayerMode::Required
    } else {
        LayerMode::BestEffort
    }
}

/// Parses an octal file mode: "0600", "600" or "0o600" (a TOML integer is taken as is).
pub(super) fn parse_mode(value: &Value) -> Option<u32> {
    let m = match value {
        Value::Integer(n) => u32::try_from(*n).ok()?,
        Value::String(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            if digits.is_empty() || digits.len() > 4 {
                return None;
            }
            u32::from_str_radix(digits, 8).ok()?
        }
        _ => return None,
    };
    (m <= 0o777).then_some(m)
}

pub(super) fn daemon_settings(v: &Values) -> Result<DaemonSettings, DaemonError> {
    let socket = v.string("daemon", "socket")?;
    if socket.is_empty() || socket.len() > 107 {
        let e = v.get("daemon", "socket");
        return Err(Values::bad(
            "daemon",
            "socket",
            &e,
            "a path of 1 to 107 bytes (the limit of a Unix socket address)",
        ));
    }
    let mode_entry = v.get("daemon", "socket_mode");
    let socket_mode = parse_mode(&mode_entry.value).ok_or_else(|| {
        Values::bad(
            "daemon",
            "socket_mode",
            &mode_entry,
            "an octal file mode from \"0000\" to \"0777\", e.g. \"0600\"",
        )
    })?;
    let uids_entry = v.get("daemon", "allowed_uids");
    let allowed_uids = match &uids_entry.value {
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_integer()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n != u32::MAX)
            })
            .collect::<Option<Vec<u32>>>(),
        _ => None,
    }
    .ok_or_else(|| {
        Values::bad(
            "daemon",
            "allowed_uids",
            &uids_entry,
            "a list of uids (0 to 4294967294); in a variable, comma-separated",
        )
    })?;
    let max_frame = v.int("daemon", "max_frame_bytes")?;
    Ok(DaemonSettings {
        socket: PathBuf::from(socket),
        socket_mode,
        allowed_uids,
        max_connections: v.int("daemon", "max_connections")? as usize,
        outcome_buffer: v.int("daemon", "outcome_buffer")? as usize,
        write_stall_timeout: v.ms("daemon", "write_stall_timeout_ms")?,
        max_frame_bytes: (max_frame != 0).then_some(max_frame as u32),
        drain_grace: v.ms("daemon", "drain_grace_ms")?,
        max_connections_per_uid: v.int("daemon", "max_connections_per_uid")? as usize,
        frame_timeout: v.ms("daemon", "frame_timeout_ms")?,
        idle_timeout: v.ms("daemon", "idle_timeout_ms")?,
        buffer_budget_bytes: match v.int("daemon", "buffer_budget_bytes")? {
            0 => None,
            n => Some(n),
        },
    })
}

pub(super) fn ops_settings(v: &Values) -> Result<OpsSettings, DaemonError> {
    let e = v.get("ops", "addr");
    let addr = match e.value.as_str() {
        Some("off") => None,
        Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
            Values::bad(
                "ops",
                "addr",
                &e,
                "an IP address and port such as \"127.0.0.1:9464\" or \"[::1]:9464\", or \"off\"",
            )
        })?),
        None => {
            return Err(Values::bad(
                "ops",
                "addr",
                &e,
                "a string: an IP address and port, or \"off\"",
            ))
        }
    };
    Ok(OpsSettings { addr })
}

pub(super) fn log_settings(v: &Values) -> Result<LogSettings, DaemonError> {
    let level = v.string("log", "level")?;
    if level.trim().is_empty() {
        let e = v.get("log", "level");
        return Err(Values::bad(
            "log",
            "level",
            &e,
            "a level (error, warn, info, debug, trace) or tracing directives",
        ));
    }
    let json = v.choice("log", "format")? == "json";
    Ok(LogSettings { level, json })
}
