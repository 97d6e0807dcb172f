//! A RELP client (the Reliable Event Logging Protocol of rsyslog's librelp): syslog messages
//! over TCP that the receiver acknowledges one by one, so a stream knows what a receiver took.
//! Plain TCP cannot tell: bytes a receiver's kernel accepted and the receiver never read are
//! lost silently when it dies.
//!
//! A frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF`. The session opens with `open` (the
//! offers `relp_version=0`, `relp_software`, `commands=syslog`) and the receiver's `rsp` naming
//! `syslog` among its commands; each message is a `syslog` frame, answered by `rsp` with `200
//! OK` once the receiver holds it. The session ends with the connection (a receiver's
//! `serverclose` ends it too). Transaction numbers run from 1 and wrap after 999,999,999 (to 1). Messages are sent in windows of `WINDOW` unanswered
//! frames. Written by hand: the protocol is a few lines of framing and no maintained Rust
//! crate speaks it.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Unanswered `syslog` frames at most (librelp's default window).
const WINDOW: usize = 128;
/// Largest response frame read (responses are a status line and a few offers).
const RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// The largest transaction number before it wraps.
const TXNR_MAX: u64 = 999_999_999;

/// An open RELP session.
pub(crate) struct Relp {
    tcp: TcpStream,
    /// The next transaction number.
    txnr: u64,
    /// Bytes read and not yet parsed.
    buffer: Vec<u8>,
}

/// A response frame.
struct Response {
    txnr: u64,
    command: String,
    data: Vec<u8>,
}

fn broken(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl Relp {
    /// Opens a session on `tcp`: the offers out, the receiver's `200` and `commands=syslog` in.
    pub(crate) async fn open(tcp: TcpStream) -> io::Result<Relp> {
        let mut session = Relp {
            tcp,
            txnr: 1,
            buffer: Vec::new(),
        };
        let offers = format!(
            "relp_version=0\nrelp_software=custos,{},https://github.com/custos\ncommands=syslog",
            env!("CARGO_PKG_VERSION")
        );
        let txnr = session.send_frame("open", offers.as_bytes()).await?;
        let answer = session.read_response().await?;
        let text = String::from_utf8_lossy(&answer.data).into_owned();
        if answer.txnr != txnr || !text.starts_with("200") {
            return Err(broken(format!(
                "the receiver refused the RELP session: {text}"
            )));
        }
        if !text.lines().any(|line| {
            line.strip_prefix("commands=")
                .is_some_and(|commands| commands.split(',').any(|c| c == "syslog"))
        }) {
            return Err(broken("the RELP receiver does not take syslog messages"));
        }
        Ok(session)
    }

    /// Sends `messages` as `syslog` frames; returns how many the receiver acknowledged, in
    /// order from the first, and the error that stopped the rest, if any. Each write and each
    /// answer may take `wait` at most.
    pub(crate) async fn send(
        &mut self,
        messages: &[Vec<u8>],
        wait: Duration,
    ) -> (usize, Option<io::Error>) {
        let timed = |_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the RELP receiver did not answer in time",
            )
        };
        let mut acknowledged = 0;
        for window in messages.chunks(WINDOW) {
            let mut sent = Vec::with_capacity(window.len());
            for message in window {
                match timeout(wait, self.send_frame("syslog", message))
                    .await
                    .map_err(timed)
                {
                    Ok(Ok(txnr)) => sent.push(txnr),
                    Ok(Err(error)) | Err(error) => return (acknowledged, Some(error)),
                }
            }
            // Responses come in order; the first that is not `200` ends the batch there.
            for txnr in sent {
                match timeout(wait, self.read_response())
                    .await
                    .map_err(timed)
                    .and_then(|r| r)
                {
                    Ok(answer) if answer.txnr == txnr && answer.data.starts_with(b"200") => {
                        acknowledged += 1;
                    }
                    Ok(answer) => {
                        let text = String::from_utf8_lossy(&answer.data);
                        return (
                            acknowledged,
                            Some(broken(format!(
                                "the RELP receiver answered message {txnr} with {} {}",
                                answer.command,
                                text.lines().next().unwrap_or("")
                            ))),
                        );
                    }
                    Err(error) => return (acknowledged, Some(error)),
                }
            }
        }
        (acknowledged, None)
    }

    /// Whether the session has ended: the receiver closed the connection, or sent something
    /// while it owed nothing (a `serverclose`). Does not wait.
    pub(crate) fn closed(&mut self) -> bool {
        use futures_util::FutureExt;
        let mut chunk = [0u8; 512];
        self.tcp.read(&mut chunk).now_or_never().is_some()
    }

    /// Writes one frame; returns its transaction number.
    async fn send_frame(&mut self, command: &str, data: &[u8]) -> io::Result<u64> {
        let txnr = self.txnr;
        self.txnr = if txnr >= TXNR_MAX { 1 } else { txnr + 1 };
        let mut frame = format!("{txnr} {command} {}", data.len()).into_bytes();
        if !data.is_empty() {
            frame.push(b' ');
            frame.extend_from_slice(data);
        }
        frame.push(b'\n');
        self.tcp.write_all(&frame).await?;
        Ok(txnr)
    }

    /// Reads the next response frame; a `serverclose` or anything but `rsp` is an error.
    async fn read_response(&mut self) -> io::Result<Response> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buffer)? {
                self.buffer.drain(..used);
                if frame.command != "rsp" {
                    return Err(broken(format!(
                        "the RELP receiver sent '{}' (it closed the session)",
                        frame.command
                    )));
                }
                return Ok(frame);
            }
            if self.buffer.len() > RESPONSE_BYTES_MAX {
                return Err(broken("a RELP response over 64 KiB"));
            }
            let mut chunk = [0u8; 4096];
            let read = self.tcp.read(&mut chunk).await?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the RELP receiver closed the connection",
                ));
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// The first frame of `bytes` and the bytes it takes, or `None` when it is incomplete.
fn parse_frame(bytes: &[u8]) -> io::Result<Option<(Response, usize)>> {
    // TXNR SP COMMAND SP DATALEN: three fields before the data.
    let mut fields = Vec::with_capacity(3);
    let mut at = 0;
    while fields.len() < 3 {
        let Some(end) = bytes[at..]
            .iter()
            .position(|b| *b == b' ' || *b == b'\n')
            .map(|p| at + p)
        else {
            return if bytes.len() - at > 32 {
                Err(broken("a RELP frame header over 32 bytes"))
            } else {
                Ok(None)
            };
        };
        fields.push(
            std::str::from_utf8(&bytes[at..end])
                .map_err(|_| broken("a RELP header that is not text"))?,
        );
        at = end + 1;
        if bytes[end] == b'\n' && fields.len() < 3 {
            return Err(broken("a RELP frame cut short"));
        }
    }
    let number = |text: &str, what: &str| {
        text.parse::<u64>()
            .map_err(|_| broken(format!("a RELP {what} '{text}' that is not a number")))
    };
    let txnr = number(fields[0], "transaction number")?;
    let command = fields[1].to_string();
    let length = usize::try_from(number(fields[2], "data length")?)
        .map_err(|_| broken("a RELP data length too large"))?;
    if length > RESPONSE_BYTES_MAX {
        return Err(broken("a RELP response over 64 KiB"));
    }
    // DATALEN 0: the header's separator was the trailer itself.
    if length == 0 {
        return if bytes[at - 1] == b'\n' {
            Ok(Some((
                Response {
                    txnr,
                    command,
                    data: Vec::new(),
                },
                at,
            )))
        } else if bytes.len() > at {
            match bytes[at] {
                b'\n' => Ok(Some((
                    Response {
                        txnr,
                        command,
                        data: Vec::new(),
                    },
                    at + 1,
                ))),
                _ => Err(broken("a RELP frame without its trailer")),
            }
        } else {
            Ok(None)
        };
    }
    if bytes.len() < at + length + 1 {
        return Ok(None);
    }
    if bytes[at + length] != b'\n' {
        return Err(broken("a RELP frame without its trailer"));
    }
    Ok(Some((
        Response {
            txnr,
            command,
            data: bytes[at..at + length].to_vec(),
        },
        at + length + 1,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8]) -> (u64, String, Vec<u8>, usize) {
        let (frame, used) = parse_frame(bytes).unwrap().expect("a whole frame");
        (frame.txnr, frame.command, frame.data, used)
    }

    #[test]
    fn frames_are_read_as_librelp_writes_them() {
        assert_eq!(
            parsed(b"2 rsp 6 200 OK\n3 rsp"),
            (2, "rsp".into(), b"200 OK".to_vec(), 15)
        );
        assert_eq!(parsed(b"3 rsp 0\n"), (3, "rsp".into(), Vec::new(), 8));
        assert_eq!(
            parsed(b"0 serverclose 0\n"),
            (0, "serverclose".into(), Vec::new(), 16)
        );
        for partial in [&b"2 rsp 6 200"[..], b"2 rsp", b"", b"2 rsp 6 200 OK"] {
            assert!(parse_frame(partial).unwrap().is_none(), "{partial:?}");
        }
        for bad in [
            &b"x rsp 6 200 OK\n"[..],
            b"2 rsp 6 200 OKX",
            b"2 rsp\n",
            b"2 rsp 99999999 ",
        ] {
            assert!(parse_frame(bad).is_err(), "{bad:?}");
        }
    }
}
