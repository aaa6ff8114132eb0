//! The frame reader under [`super::h2_guard::FrameGuard`]: it follows the
//! client's byte stream frame by frame and spends the connection's
//! budgets. It keeps a frame's 9-byte header and, of payloads, only the
//! 4-byte increment of a WINDOW_UPDATE, so its state is a few bytes
//! whatever the reads look like.
//!
//! Budgets, each a token bucket refilled at a tenth of its size a second:
//! stream resets (RST_STREAM), and control frames, which cost the gateway
//! work and give the client nothing: SETTINGS and PING (each answered with
//! an ACK), PRIORITY, empty DATA, and WINDOW_UPDATEs granting fewer than
//! [`SMALL_WINDOW_INCREMENT`] bytes. An increment of 1 makes the `h2`
//! library send one byte of a waiting answer in a DATA frame of its own
//! (the "data dribble", CVE-2019-9511); a download's increments are tens of
//! KiB (the `h2` library sends one per half window read), so those stay free.

use tokio::time::Instant;

use crate::config::H2Limits;

const PREFACE_LEN: usize = 24;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;

/// A WINDOW_UPDATE granting fewer bytes than this (zero included) is a
/// control frame. One granting more releases at least this much of an
/// answer per frame, the cost of sending the answer at all.
pub const SMALL_WINDOW_INCREMENT: u32 = 1024;

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    Resets,
    Control,
    Timeout,
}

/// What one chunk of bytes did to the head clock.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Clock {
    Keep,
    Start,
    Stop,
}

/// A token bucket of `cap` frames, refilled at `cap / 10` a second.
#[derive(Debug)]
struct Budget {
    tokens: f64,
    cap: f64,
    last: Instant,
}

impl Budget {
    fn new(cap: u32) -> Self {
        Budget {
            tokens: f64::from(cap),
            cap: f64::from(cap),
            last: Instant::now(),
        }
    }

    /// Take one token, or say which flood the bucket stands for.
    fn spend(&mut self, why: Flood) -> Result<(), Flood> {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.cap / 10.0;
        self.tokens = (self.tokens + refill).min(self.cap);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(why)
        }
    }
}

/// The increment of a WINDOW_UPDATE, read as its payload bytes arrive.
#[derive(Debug, Default)]
struct Increment {
    value: u32,
    got: u8,
}

impl Increment {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(usize::from(4 - self.got)) {
            self.value = (self.value << 8) | u32::from(b);
            self.got += 1;
        }
    }

    /// The window size increment (the reserved high bit is not part of it).
    fn bytes(&self) -> u32 {
        self.value & 0x7fff_ffff
    }
}

/// The frame reader's position in the client's byte stream.
#[derive(Debug)]
pub(super) struct Frames {
    preface_left: usize,
    header: [u8; 9],
    header_len: usize,
    /// Payload bytes of the current frame still to come.
    skip: usize,
    /// The current frame is a WINDOW_UPDATE: its increment so far.
    increment: Option<Increment>,
    /// The head clock stops when the current frame's payload is in: the
    /// first frame (SETTINGS), or the frame that ends a header block.
    stop_after_payload: bool,
    /// The first frame after the preface has been seen.
    settled: bool,
    resets: Budget,
    control: Budget,
}

impl Frames {
    pub(super) fn new(limits: &H2Limits) -> Self {
        Frames {
            preface_left: PREFACE_LEN,
            header: [0; 9],
            header_len: 0,
            skip: 0,
            increment: None,
            stop_after_payload: false,
            settled: false,
            resets: Budget::new(limits.max_resets),
            control: Budget::new(limits.max_control_frames),
        }
    }

    /// Account for `bytes` read from the client.
    pub(super) fn scan(&mut self, mut bytes: &[u8]) -> Result<Clock, Flood> {
        let mut clock = Clock::Keep;
        while !bytes.is_empty() {
            let n = if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                n
            } else if self.skip > 0 {
                self.payload(bytes, &mut clock)?
            } else {
                self.header(bytes, &mut clock)?
            };
            bytes = &bytes[n..];
        }
        Ok(clock)
    }

    /// Payload bytes of the current frame: skipped, but for an increment.
    fn payload(&mut self, bytes: &[u8], clock: &mut Clock) -> Result<usize, Flood> {
        let n = self.skip.min(bytes.len());
        self.skip -= n;
        if let Some(inc) = &mut self.increment {
            inc.push(&bytes[..n]);
        }
        if self.skip == 0 {
            self.payload_done(clock)?;
        }
        Ok(n)
    }

    /// The current frame is in whole.
    fn payload_done(&mut self, clock: &mut Clock) -> Result<(), Flood> {
        if self.stop_after_payload {
            self.stop_after_payload = false;
            *clock = Clock::Stop;
        }
        match self.increment.take() {
            Some(inc) if inc.bytes() < SMALL_WINDOW_INCREMENT => self.control.spend(Flood::Control),
            _ => Ok(()),
        }
    }

    /// Bytes of a frame header; a whole one is accounted for.
    fn header(&mut self, bytes: &[u8], clock: &mut Clock) -> Result<usize, Flood> {
        let n = (9 - self.header_len).min(bytes.len());
        self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
        self.header_len += n;
        if self.header_len == 9 {
            self.header_len = 0;
            self.frame(clock)?;
        }
        Ok(n)
    }

    /// A frame header: its budget spent, the head clock moved.
    fn frame(&mut self, clock: &mut Clock) -> Result<(), Flood> {
        let h = self.header;
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        self.skip = len;
        if !self.settled {
            // The preface's first frame: the clock runs until its payload
            // is in.
            self.settled = true;
            self.stop_after_payload = true;
        }
        match kind {
            RST_STREAM => self.resets.spend(Flood::Resets)?,
            SETTINGS | PING if flags & FLAG_ACK == 0 => self.control.spend(Flood::Control)?,
            PRIORITY => self.control.spend(Flood::Control)?,
            DATA if len == 0 && flags & FLAG_END_STREAM == 0 => {
                self.control.spend(Flood::Control)?
            }
            // Its increment is judged once read; a frame of another size is
            // malformed (the `h2` library closes the connection) and costs
            // as a small one.
            WINDOW_UPDATE if len == 4 => self.increment = Some(Increment::default()),
            WINDOW_UPDATE => self.control.spend(Flood::Control)?,
            // A header block runs the clock from its first frame's header to
            // the end of the payload that ends it.
            HEADERS | PUSH_PROMISE => {
                *clock = Clock::Start;
                self.stop_after_payload = flags & FLAG_END_HEADERS != 0;
            }
            CONTINUATION if flags & FLAG_END_HEADERS != 0 => self.stop_after_payload = true,
            _ => {}
        }
        if len == 0 {
            self.payload_done(clock)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> H2Limits {
        H2Limits {
            max_concurrent_streams: 100,
            stream_window: 65_535,
            connection_window: 65_535,
            max_resets: 10,
            max_control_frames: 10,
        }
    }

    fn frame(kind: u8, flags: u8, len: usize) -> Vec<u8> {
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.resize(9 + len, 0);
        f
    }

    fn window_update(increment: u32) -> Vec<u8> {
        let mut f = frame(WINDOW_UPDATE, 0, 4);
        f[9..].copy_from_slice(&increment.to_be_bytes());
        f
    }

    #[tokio::test]
    async fn budgets_are_spent_by_frames_across_read_boundaries() {
        let mut f = Frames::new(&limits());
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(SETTINGS, 0, 6));
        // One byte at a time: the preface, then a SETTINGS frame.
        let mut clocks = Vec::new();
        for b in &bytes {
            clocks.push(f.scan(std::slice::from_ref(b)).unwrap());
        }
        // Stopped once, when the SETTINGS payload's last byte came.
        assert_eq!(clocks.iter().filter(|c| **c == Clock::Stop).count(), 1);
        assert_eq!(clocks.last(), Some(&Clock::Stop));
        // ACKs and a download's WINDOW_UPDATEs are free; pings are not.
        for _ in 0..50 {
            f.scan(&frame(PING, FLAG_ACK, 8)).unwrap();
            f.scan(&window_update(32 * 1024)).unwrap();
        }
        // The client's first SETTINGS counted one of the 10.
        for _ in 0..8 {
            f.scan(&frame(PING, 0, 8)).unwrap();
        }
        assert_eq!(f.scan(&frame(PING, 0, 8)), Ok(Clock::Keep));
        assert_eq!(f.scan(&frame(PRIORITY, 0, 5)), Err(Flood::Control));
        let mut f = Frames::new(&limits());
        f.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        let mut resets = Vec::new();
        for _ in 0..11 {
            resets.extend(frame(RST_STREAM, 0, 4));
        }
        assert_eq!(f.scan(&resets), Err(Flood::Resets));
    }

    #[tokio::test]
    async fn small_window_updates_spend_the_control_budget_across_read_boundaries() {
        let mut f = Frames::new(&limits());
        f.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        // The client's SETTINGS: 1 of the 10.
        f.scan(&frame(SETTINGS, 0, 0)).unwrap();
        // A download's increments (1,024 bytes and more; the reserved bit
        // is not part of it) are free, however the reads split them.
        let mut big = Vec::new();
        for inc in [1024, 32 * 1024, (1 << 31) | 1024, 0x7fff_ffff] {
            big.extend(window_update(inc).repeat(25));
        }
        for n in [1, 2, 3, 5, 7, 13] {
            for chunk in big.chunks(n) {
                assert_eq!(f.scan(chunk), Ok(Clock::Keep));
            }
        }
        // Small ones (a dribble) are not: 8 of them, a byte at a time, and
        // one split inside its increment; the reserved bit hides nothing.
        for inc in [1, 0, 1023, (1 << 31) | 1, 512, 1, 1, 1] {
            for b in window_update(inc) {
                assert_eq!(f.scan(&[b]), Ok(Clock::Keep), "{inc}");
            }
        }
        let last = window_update(1);
        assert_eq!(f.scan(&last[..11]), Ok(Clock::Keep));
        assert_eq!(f.scan(&last[11..]), Ok(Clock::Keep));
        // The budget is spent: the next small increment closes.
        let mut two = window_update(64 * 1024);
        two.extend(window_update(2));
        assert_eq!(f.scan(&two), Err(Flood::Control));
    }

    #[tokio::test]
    async fn a_malformed_window_update_costs_as_a_small_one() {
        let mut f = Frames::new(&limits());
        f.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        f.scan(&frame(SETTINGS, 0, 0)).unwrap();
        for len in [0, 3, 5, 8, 0, 3, 5, 8, 1] {
            assert_eq!(f.scan(&frame(WINDOW_UPDATE, 0, len)), Ok(Clock::Keep));
        }
        // Its payload was skipped whole: the next frame is read as one.
        assert_eq!(f.scan(&frame(PING, FLAG_ACK, 8)), Ok(Clock::Keep));
        assert_eq!(f.scan(&frame(WINDOW_UPDATE, 0, 6)), Err(Flood::Control));
    }

    #[tokio::test]
    async fn a_header_block_runs_the_clock_until_its_last_byte() {
        let mut f = Frames::new(&limits());
        f.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        assert_eq!(f.scan(&frame(SETTINGS, 0, 0)), Ok(Clock::Stop));
        assert_eq!(f.scan(&frame(HEADERS, 0, 3)), Ok(Clock::Start));
        assert_eq!(f.scan(&frame(CONTINUATION, 0, 3)), Ok(Clock::Keep));
        assert_eq!(
            f.scan(&frame(CONTINUATION, FLAG_END_HEADERS, 3)),
            Ok(Clock::Stop)
        );
        // A whole block in one read: started and stopped, stopped wins.
        assert_eq!(
            f.scan(&frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 3)),
            Ok(Clock::Stop)
        );
        // A block whose payload trickles: the clock runs until its end.
        let whole = frame(HEADERS, FLAG_END_HEADERS, 4);
        assert_eq!(f.scan(&whole[..11]), Ok(Clock::Start));
        assert_eq!(f.scan(&whole[11..12]), Ok(Clock::Keep));
        assert_eq!(f.scan(&whole[12..]), Ok(Clock::Stop));
    }
}
