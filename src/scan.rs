//! ウイルスチェック: attached files are scanned by ClamAV's daemon (clamd) before they
//! are kept, when the operator names one (`--clamd`: a Unix socket path, or
//! `tcp://host:port`). The file is streamed to it (`INSTREAM`); a file it finds
//! something in is refused, and so is every file while it cannot answer (the
//! citizen is asked to attach it again later; what was typed is kept).

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long one scan may take, connecting included.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(30);
/// The chunks a file is streamed in.
const CHUNK: usize = 64 * 1024;
/// The longest reply read.
const MAX_REPLY: usize = 4096;

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clamd {
    Unix(PathBuf),
    Tcp(String),
}

impl Clamd {
    /// `/run/clamav/clamd.ctl` or `tcp://127.0.0.1:3310`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        if let Some(addr) = s.strip_prefix("tcp://") {
            anyhow::ensure!(
                addr.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
                "--clamd {s:?}: tcp://HOST:PORT"
            );
            Ok(Self::Tcp(addr.to_owned()))
        } else {
            anyhow::ensure!(
                s.starts_with('/'),
                "--clamd {s:?}: an absolute socket path or tcp://HOST:PORT"
            );
            Ok(Self::Unix(PathBuf::from(s)))
        }
    }
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// Something was found: the signature's name.
    Found(String),
}

/// Scans `data`; an error when clamd could not say (not running, too slow, refused).
pub async fn scan(clamd: &Clamd, data: &[u8]) -> anyhow::Result<Verdict> {
    let reply = tokio::time::timeout(SCAN_TIMEOUT, async {
        match clamd {
            Clamd::Unix(path) => instream(tokio::net::UnixStream::connect(path).await?, data).await,
            Clamd::Tcp(addr) => instream(tokio::net::TcpStream::connect(addr).await?, data).await,
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("clamd did not answer within {SCAN_TIMEOUT:?}"))??;
    verdict(&reply)
}

/// Streams `data` as `zINSTREAM` and returns the reply. clamd may answer and close
/// before the stream ends (a file over its `StreamMaxLength`): its reply is read then,
/// rather than reporting the broken pipe.
async fn instream<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    data: &[u8],
) -> anyhow::Result<String> {
    let sent: std::io::Result<()> = async {
        s.write_all(b"zINSTREAM\0").await?;
        for chunk in data.chunks(CHUNK) {
            let len = u32::try_from(chunk.len()).map_err(std::io::Error::other)?;
            s.write_all(&len.to_be_bytes()).await?;
            s.write_all(chunk).await?;
        }
        s.write_all(&0u32.to_be_bytes()).await?;
        s.flush().await
    }
    .await;
    if let Err(e) = sent {
        return match tokio::time::timeout(Duration::from_secs(2), read_reply(&mut s)).await {
            Ok(Ok(reply)) if !reply.is_empty() => Ok(reply),
            _ => Err(e.into()),
        };
    }
    read_reply(&mut s).await
}

/// clamd's reply: up to its NUL (a reply cut short is an error).
async fn read_reply<S: AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<String> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.contains(&0) || reply.len() > MAX_REPLY {
            break;
        }
    }
    let end = reply
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| anyhow::anyhow!("clamd's reply ended without its NUL"))?;
    Ok(String::from_utf8_lossy(&reply[..end]).trim().to_owned())
}

/// clamd's reply to a stream: `stream: OK`, `stream: NAME FOUND` or `… ERROR`.
fn verdict(reply: &str) -> anyhow::Result<Verdict> {
    let body = reply.strip_prefix("stream:").unwrap_or(reply).trim();
    if body == "OK" {
        Ok(Verdict::Clean)
    } else if let Some(name) = body.strip_suffix(" FOUND") {
        // Logged and kept in the operation log: a signature name's own characters
        // only, and not more than 128 of them, whatever a daemon sends.
        let name: String = name
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "._-:/+".contains(*c))
            .take(128)
            .collect();
        Ok(Verdict::Found(if name.is_empty() {
            "unnamed".into()
        } else {
            name
        }))
    } else {
        anyhow::bail!("clamd: {}", reply.chars().take(200).collect::<String>())
    }
}

/// Scans by outcome (`clean`, `found`, `error`), for `/metrics`.
pub fn scans() -> &'static prometheus_client::metrics::family::Family<
    crate::front::metrics::OutcomeLabels,
    prometheus_client::metrics::counter::Counter,
> {
    static F: std::sync::OnceLock<
        prometheus_client::metrics::family::Family<
            crate::front::metrics::OutcomeLabels,
            prometheus_client::metrics::counter::Counter,
        >,
    > = std::sync::OnceLock::new();
    F.get_or_init(Default::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_addresses_are_read() {
        assert_eq!(verdict("stream: OK").ok(), Some(Verdict::Clean));
        assert_eq!(
            verdict("stream: Eicar-Test-Signature FOUND").ok(),
            Some(Verdict::Found("Eicar-Test-Signature".into()))
        );
        assert_eq!(
            verdict("stream: Bad\u{1b}[31m<b>Name FOUND").ok(),
            Some(Verdict::Found("Bad31mbName".into()))
        );
        assert!(verdict("INSTREAM size limit exceeded. ERROR").is_err());
        assert!(verdict("").is_err());
        assert_eq!(
            Clamd::parse("/run/clamav/clamd.ctl").ok(),
            Some(Clamd::Unix("/run/clamav/clamd.ctl".into()))
        );
        assert_eq!(
            Clamd::parse("tcp://127.0.0.1:3310").ok(),
            Some(Clamd::Tcp("127.0.0.1:3310".into()))
        );
        for bad in ["clamd.ctl", "tcp://127.0.0.1", "tcp://:3310"] {
            assert!(Clamd::parse(bad).is_err(), "{bad}");
        }
    }
}
