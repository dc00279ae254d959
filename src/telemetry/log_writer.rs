//! The log writer: log lines go into one shared buffer, and a thread of its own writes the buffer out in batches.
//!
//! A caller's line costs an append under a short lock; the writer thread is woken once per batch (when the buffer
//! goes from empty to non-empty), then waits [`BATCH_WINDOW`] so the lines of that window leave in one `write`.
//! Under load that is at most a few hundred wake-ups and writes a second however many RPCs finish, where a queue
//! of lines woke the thread and wrote once for nearly every line. Nothing is dropped: when the buffer holds
//! [`BUFFER_LIMIT`] bytes (a stalled stderr), callers wait until the writer has taken it.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer thread lets lines gather after the first of a batch arrives.
pub const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// Bytes the buffer may hold before a caller that logs waits for the writer.
pub const BUFFER_LIMIT: usize = 1 << 20;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The guard was dropped: the writer thread writes what is buffered and ends.
    closed: bool,
    /// The output, given back by the writer thread when it ended: lines logged after that are written by their
    /// callers.
    out: Option<Box<dyn Write + Send>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the buffer gets its first bytes, and at close.
    has_lines: Condvar,
    /// Signalled when the writer has taken the buffer.
    has_room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread that panicked while holding the lock left the buffer as valid bytes: go on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, bytes: &[u8]) {
        let mut state = self.lock();
        if let Some(out) = state.out.as_mut() {
            let _ = out.write_all(bytes).and_then(|()| out.flush());
            return;
        }
        while state.buf.len() >= BUFFER_LIMIT && !state.closed {
            state = self.has_room.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        let first = state.buf.is_empty();
        state.buf.extend_from_slice(bytes);
        drop(state);
        if first {
            self.has_lines.notify_one();
        }
    }
}

/// The [`MakeWriter`] handed to the log layer: each line is appended to the shared buffer.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Writes what is still buffered and stops the writer thread when dropped.
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.has_lines.notify_one();
        self.shared.has_room.notify_all();
        if let Some(thread) = self.thread.take() {
            // The thread only writes; a panic there has nothing left to report.
            let _ = thread.join();
        }
    }
}

/// Starts the writer thread over `out`. Lines written to the returned [`LogWriter`] reach `out` within about
/// [`BATCH_WINDOW`], and all of them when the guard is dropped; lines logged after that are written by their
/// callers. Fails only when the thread cannot be started.
pub fn spawn<W>(out: W) -> std::io::Result<(LogWriter, LogWriterGuard)>
where
    W: Write + Send + 'static,
{
    let shared = Arc::new(Shared::default());
    let writer = LogWriter {
        shared: shared.clone(),
    };
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name("facegate-log".into())
        .spawn(move || run(&thread_shared, Box::new(out)))?;
    Ok((
        writer,
        LogWriterGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn run(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut spare = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.buf.is_empty() && !state.closed {
            state = shared
                .has_lines
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        if state.buf.is_empty() {
            // Closed, and everything written: later lines are written by their callers.
            let _ = out.flush();
            state.out = Some(out);
            return;
        }
        if !state.closed {
            // Let the rest of this batch arrive.
            drop(state);
            std::thread::sleep(BATCH_WINDOW);
            state = shared.lock();
        }
        std::mem::swap(&mut state.buf, &mut spare);
        drop(state);
        shared.has_room.notify_all();
        // A failed write to stderr cannot be reported anywhere better; the lines are dropped, not retried.
        let _ = out.write_all(&spare).and_then(|()| out.flush());
        spare.clear();
        // Keep a buffer of a typical batch's size, not of the largest one ever seen.
        spare.shrink_to(64 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(buf);
            *self.writes.lock().unwrap() += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_and_in_few_writes() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.make_writer();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        w.write_all(format!("t{t} line {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.bytes.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 20_000);
        for t in 0..4 {
            let mine: Vec<_> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let expected: Vec<_> = (0..5000).map(|i| format!("t{t} line {i}")).collect();
            assert_eq!(mine, expected, "thread {t}'s lines out of order or lost");
        }
        let writes = *sink.writes.lock().unwrap();
        assert!(
            writes < 20_000,
            "{writes} writes for 20000 lines: not batched"
        );
        // After the guard: written by the caller, not lost in a buffer nobody takes.
        writer.make_writer().write_all(b"late\n").unwrap();
        assert!(sink.bytes.lock().unwrap().ends_with(b"late\n"));
    }

    #[test]
    fn a_line_is_written_without_waiting_for_the_guard() {
        let sink = Sink::default();
        let (writer, _guard) = spawn(sink.clone()).unwrap();
        writer.make_writer().write_all(b"hello\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.bytes.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "line never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(&*sink.bytes.lock().unwrap(), b"hello\n");
    }

    #[test]
    fn a_stalled_output_makes_callers_wait_instead_of_growing_without_bound() {
        struct Stalled(Arc<Mutex<()>>, Arc<Mutex<usize>>);
        impl Write for Stalled {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let _held = self.0.lock().unwrap();
                *self.1.lock().unwrap() += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let written = Arc::new(Mutex::new(0usize));
        let held = gate.lock().unwrap();
        let (writer, guard) = spawn(Stalled(gate.clone(), written.clone())).unwrap();
        let logger = {
            let mut w = writer.make_writer();
            std::thread::spawn(move || {
                let line = [b'x'; 1024];
                for _ in 0..(4 * BUFFER_LIMIT / 1024) {
                    w.write_all(&line).unwrap();
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        // With the output stalled the buffer holds at most the limit plus one line.
        let buffered = writer.shared.lock().buf.len();
        assert!(buffered <= BUFFER_LIMIT + 1024, "buffer grew to {buffered}");
        assert!(!logger.is_finished(), "the logger never waited");
        drop(held);
        logger.join().unwrap();
        drop(guard);
        assert_eq!(*written.lock().unwrap(), 4 * BUFFER_LIMIT);
    }
}
