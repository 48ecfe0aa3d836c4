//! A small SMTP server inside the test process (RFC 5321: EHLO, MAIL, RCPT, DATA,
//! RSET, NOOP, QUIT on a free port; in clear, with STARTTLS (RFC 3207) or TLS from
//! the start), keeping what it receives. It can refuse the next recipients for now
//! (451) or for good (550), as a relay would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// One mail as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    /// Whether it came over TLS.
    pub tls: bool,
}

impl Received {
    /// A header's value, unfolded, with RFC 2047 encoded words decoded.
    pub fn header(&self, name: &str) -> String {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        let prefix = format!("{}:", name.to_ascii_lowercase());
        let raw = unfolded
            .split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
            .unwrap_or_default();
        decode_words(&raw)
    }

    /// The text body (base64 transfer encoding, as the service sends it), decoded.
    pub fn body(&self) -> String {
        let (head, body) = self.data.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.to_ascii_lowercase()
                .contains("content-transfer-encoding: base64"),
            "{head}"
        );
        let b64: String = body.split_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|e| panic!("body not base64: {e}"));
        String::from_utf8(bytes).unwrap_or_else(|e| panic!("body not UTF-8: {e}"))
    }
}

/// Decodes `=?utf-8?b?…?=` words (adjacent ones join without the space between).
fn decode_words(raw: &str) -> String {
    let re = regex::Regex::new(r"(?i)=\?utf-8\?b\?([^?]*)\?=").unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    let mut last = 0;
    for m in re.captures_iter(raw) {
        let whole = m.get(0).unwrap_or_else(|| panic!("match"));
        let between = &raw[last..whole.start()];
        if !(last > 0 && between.trim().is_empty()) {
            out.push_str(between);
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&m[1])
            .unwrap_or_else(|e| panic!("{e}"));
        out.push_str(&String::from_utf8_lossy(&bytes));
        last = whole.end();
    }
    out.push_str(&raw[last..]);
    out
}

#[derive(Default)]
struct State {
    mails: Vec<Received>,
    /// Replies for the next recipients, instead of 250.
    refusals: Vec<&'static str>,
    /// While set to the number of mails received, the next recipient gets no answer.
    stall_at: Option<usize>,
}

pub struct SmtpServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the server meets a client.
#[derive(Clone)]
pub enum Security {
    /// In clear, offering nothing.
    Plain,
    /// In clear, offering STARTTLS (port 587's way).
    StartTls(TlsAcceptor),
    /// TLS from the first byte (port 465's way).
    Wrapper(TlsAcceptor),
}

impl SmtpServer {
    pub async fn start() -> Self {
        Self::start_with(Security::Plain).await
    }

    pub async fn start_with(security: Security) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(session(sock, Arc::clone(&shared), security.clone()));
            }
        });
        Self { port, state, task }
    }

    /// The next recipient is refused with 451 (try again later).
    pub fn refuse_next_for_now(&self) {
        self.lock().refusals.push("451 4.3.0 Try again later");
    }

    /// The next recipient is refused with 550 (no such mailbox).
    pub fn refuse_next_for_good(&self) {
        self.lock().refusals.push("550 5.1.1 Mailbox unavailable");
    }

    /// Holds the answer to the recipient of mail number `n + 1` (after `n` have
    /// arrived) until [`Self::release`].
    pub fn stall_after(&self, n: usize) {
        self.lock().stall_at = Some(n);
    }

    pub fn release(&self) {
        self.lock().stall_at = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits (up to 20 s) until `n` mails have arrived; all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..200 {
            let mails = self.lock().mails.clone();
            if mails.len() >= n {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{n} mails expected, {} arrived", self.lock().mails.len());
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().mails.clone()
    }
}

async fn session(sock: TcpStream, state: Arc<Mutex<State>>, security: Security) {
    match security {
        Security::Plain => {
            converse(sock, &state, Stage::Clear { offer_tls: false }).await;
        }
        Security::Wrapper(acceptor) => {
            if let Ok(tls) = acceptor.accept(sock).await {
                converse(tls, &state, Stage::Tls { greet: true }).await;
            }
        }
        Security::StartTls(acceptor) => {
            if let Some(sock) = converse(sock, &state, Stage::Clear { offer_tls: true }).await {
                if let Ok(tls) = acceptor.accept(sock).await {
                    // The client greets again (EHLO) over TLS; the server does not.
                    converse(tls, &state, Stage::Tls { greet: false }).await;
                }
            }
        }
    }
}

/// Where a conversation stands.
#[derive(Clone, Copy)]
enum Stage {
    Clear { offer_tls: bool },
    Tls { greet: bool },
}

/// One conversation over `stream`; gives the stream back when the client asked
/// for STARTTLS and was told to go ahead.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    state: &Mutex<State>,
    stage: Stage,
) -> Option<S> {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read);
    let (greet, offer_tls, tls) = match stage {
        Stage::Clear { offer_tls } => (true, offer_tls, false),
        Stage::Tls { greet } => (greet, false, true),
    };
    if greet
        && write
            .write_all(b"220 test.invalid ESMTP\r\n")
            .await
            .is_err()
    {
        return None;
    }
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        // No other extension offered: the service needs none (its mail is 7-bit).
        let answer: String = if upper.starts_with("EHLO") && offer_tls {
            "250-test.invalid\r\n250 STARTTLS".into()
        } else if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            "250 test.invalid".into()
        } else if upper == "STARTTLS" && offer_tls {
            write
                .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                .await
                .ok()?;
            return Some(lines.into_inner().unsplit(write));
        } else if upper.starts_with("MAIL FROM:") {
            // The reverse path, without parameters such as BODY=.
            let path = cmd[10..].trim();
            from = path[..path.find('>').map_or(path.len(), |i| i + 1)].to_owned();
            to.clear();
            "250 2.1.0 OK".into()
        } else if upper.starts_with("RCPT TO:") {
            loop {
                let stalled = {
                    let s = state.lock().unwrap_or_else(|e| panic!("{e}"));
                    s.stall_at == Some(s.mails.len())
                };
                if !stalled {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let refusal = {
                let mut s = state.lock().unwrap_or_else(|e| panic!("{e}"));
                (!s.refusals.is_empty()).then(|| s.refusals.remove(0))
            };
            match refusal {
                Some(r) => r.into(),
                None => {
                    to.push(cmd[8..].trim().trim_matches(['<', '>']).to_owned());
                    "250 2.1.5 OK".into()
                }
            }
        } else if upper == "DATA" {
            if to.is_empty() {
                "554 5.5.1 No valid recipients".into()
            } else {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await
                    .ok()?;
                let mut data = String::new();
                loop {
                    line.clear();
                    match lines.read_line(&mut line).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    // Dot-stuffing (RFC 5321 4.5.2).
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                state
                    .lock()
                    .unwrap_or_else(|e| panic!("{e}"))
                    .mails
                    .push(Received {
                        from: from.clone(),
                        to: std::mem::take(&mut to),
                        data,
                        tls,
                    });
                "250 2.0.0 Queued".into()
            }
        } else if upper == "RSET" {
            to.clear();
            "250 2.0.0 OK".into()
        } else if upper == "NOOP" {
            "250 2.0.0 OK".into()
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
            return None;
        } else {
            "502 5.5.2 Command not implemented".into()
        };
        write
            .write_all(format!("{answer}\r\n").as_bytes())
            .await
            .ok()?;
    }
}
