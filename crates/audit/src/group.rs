//! Group commit for callers that must not block on the disk (an async
//! request handler): a caller queues its event with a callback and goes on;
//! one writer thread appends everything queued so far as one write with one
//! fdatasync ([`AuditLog::append_all`]), then calls each event's callback.
//! A caller whose next step must wait for its record waits for its callback,
//! so "on disk before the action proceeds" still holds, while many callers
//! share each fsync.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use serde_json::{Map, Value};

use crate::error::AuditError;
use crate::line;
use crate::log::{AppendedEvent, AuditLog};

/// Told how an event's append ended: where it landed, or why it failed.
pub type Done = Box<dyn FnOnce(Result<&AppendedEvent, &AuditError>) + Send>;

/// Appends events for many callers, one fsync per group; see the module.
/// Dropped, it appends what is queued, then stops its thread.
pub struct GroupWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupWriter")
    }
}

struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<(String, Map<String, Value>, Done)>,
    submitted: u64,
    /// Events whose callback has run (appended or failed).
    finished: u64,
    closed: bool,
    /// The writer thread is gone (it panicked): nothing more is appended,
    /// and nobody waits for it.
    gone: bool,
}

impl GroupWriter {
    /// Starts the writer thread for `log`.
    pub fn start(log: Arc<AuditLog>) -> std::io::Result<GroupWriter> {
        let shared = Arc::new(Shared { queue: Mutex::new(Queue::default()), changed: Condvar::new() });
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("clawkeep-audit".into()).spawn(move || write_loop(&log, &s))?;
        Ok(GroupWriter { shared, thread: Mutex::new(Some(thread)) })
    }

    /// Queues one event of `kind` (fields as for [`AuditLog::append`]);
    /// `done` runs on the writer thread once it is on disk or has failed,
    /// or here and now when the fields are refused (so one such event never
    /// fails a group).
    pub fn submit(&self, kind: &str, fields: Value, done: Done) {
        let fields = match line::check_fields(fields) {
            Ok(map) => map,
            Err(e) => return done(Err(&e)),
        };
        let mut q = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.gone {
            drop(q);
            return done(Err(&AuditError::WriterGone));
        }
        q.events.push_back((kind.to_owned(), fields, done));
        q.submitted += 1;
        // The writer waits only while the queue is empty.
        if q.events.len() == 1 {
            self.shared.changed.notify_all();
        }
    }

    /// Waits until every event submitted so far is appended (or failed).
    pub fn flush(&self) {
        let mut q = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let target = q.submitted;
        while q.finished < target && !q.gone {
            q = self.shared.changed.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for GroupWriter {
    fn drop(&mut self) {
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.closed = true;
            self.shared.changed.notify_all();
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = t.join();
        }
    }
}

/// Marks the writer gone however its thread ends, a panic included, and
/// tells every event still queued: no flush, and no caller waiting for its
/// callback, waits for it forever.
struct Gone<'a>(&'a Shared);

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        let left: Vec<_> = {
            let mut q = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.gone = true;
            self.0.changed.notify_all();
            q.events.drain(..).collect()
        };
        for (_, _, done) in left {
            done(Err(&AuditError::WriterGone));
        }
    }
}

fn write_loop(log: &AuditLog, shared: &Shared) {
    let _gone = Gone(shared);
    loop {
        let batch: Vec<_> = {
            let mut q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            while q.events.is_empty() && !q.closed {
                q = shared.changed.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
            if q.events.is_empty() {
                return;
            }
            q.events.drain(..).collect()
        };
        let n = batch.len() as u64;
        let (events, dones): (Vec<_>, Vec<_>) = batch.into_iter().map(|(kind, fields, done)| ((kind, fields), done)).unzip();
        // A callback that panics (its panic is printed) costs neither the
        // other callers their answer nor the log its writer.
        let call = |done: Done, r: Result<&AppendedEvent, &AuditError>| {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| done(r)));
        };
        match log.append_checked(events) {
            Ok(appended) => dones.into_iter().zip(&appended).for_each(|(done, a)| call(done, Ok(a))),
            Err(e) => dones.into_iter().for_each(|done| call(done, Err(&e))),
        }
        let mut q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.finished += n;
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::mpsc;

    fn open() -> (tempfile::TempDir, Arc<AuditLog>) {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AuditLog::open(&dir.path().join("audit.jsonl")).unwrap());
        (dir, log)
    }

    /// Events from many threads land once each, chained in one order, and
    /// each caller hears where its own landed.
    #[test]
    fn many_callers_share_the_writer_and_the_chain_holds() {
        let (dir, log) = open();
        log.append("before", json!({})).unwrap();
        let writer = Arc::new(GroupWriter::start(log).unwrap());
        let (tx, rx) = mpsc::channel();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (writer, tx) = (writer.clone(), tx.clone());
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let tx = tx.clone();
                        writer.submit("llm.call", json!({"t": t, "i": i}), Box::new(move |r| tx.send(r.map(|a| a.seq).ok()).unwrap()));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        writer.flush();
        drop(tx);
        let mut seqs: Vec<u64> = rx.iter().map(Option::unwrap).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=400).collect::<Vec<u64>>());
        let report = crate::verify(&dir.path().join("audit.jsonl")).unwrap();
        assert!(report.first_broken.is_none(), "{:?}", report.first_broken);
        assert_eq!(report.lines, 401);
    }

    /// An event the log refuses is refused at once, alone; its neighbours land.
    #[test]
    fn a_refused_event_does_not_sink_its_group() {
        let (dir, log) = open();
        let writer = GroupWriter::start(log).unwrap();
        let (tx, rx) = mpsc::channel();
        for (i, fields) in [json!({"a": 1}), json!({"seq": 9}), json!({"b": 2})].into_iter().enumerate() {
            let tx = tx.clone();
            writer.submit("x", fields, Box::new(move |r| tx.send((i, r.is_ok())).unwrap()));
        }
        drop((writer, tx));
        let mut told: Vec<_> = rx.iter().collect();
        told.sort_unstable();
        assert_eq!(told, [(0, true), (1, false), (2, true)]);
        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 2);
    }

    /// A failed append reaches every caller of its group.
    #[test]
    fn a_failed_append_is_told_to_each_caller() {
        let (dir, log) = open();
        // A torn last line refuses appends until an operator looks.
        std::fs::write(dir.path().join("audit.jsonl"), b"{\"seq\":0").unwrap();
        let writer = GroupWriter::start(log).unwrap();
        let (tx, rx) = mpsc::channel();
        for i in 0..3 {
            let tx = tx.clone();
            writer.submit("x", json!({"i": i}), Box::new(move |r| tx.send(r.err().map(ToString::to_string)).unwrap()));
        }
        writer.flush();
        let errors: Vec<_> = rx.try_iter().collect();
        assert_eq!(errors.len(), 3);
        assert!(errors.iter().all(|e| e.as_deref().is_some_and(|e| e.contains("partial line"))), "{errors:?}");
    }

    /// A callback that panics costs the others nothing: the next event in
    /// its group and later ones are appended and told.
    #[test]
    fn a_panicking_callback_does_not_stop_the_writer() {
        let (dir, log) = open();
        let writer = GroupWriter::start(log).unwrap();
        let (queued_tx, queued_rx) = mpsc::channel::<()>();
        // Panics only once the next event is queued behind it.
        writer.submit(
            "x",
            json!({}),
            Box::new(move |_| {
                let _ = queued_rx.recv();
                panic!("a callback's bug")
            }),
        );
        let (tx, rx) = mpsc::channel();
        let told = tx.clone();
        writer.submit("x", json!({}), Box::new(move |r| told.send(r.is_ok()).unwrap()));
        queued_tx.send(()).unwrap();
        writer.submit("x", json!({}), Box::new(move |r| tx.send(r.is_ok()).unwrap()));
        writer.flush();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [true, true]);
        assert_eq!(std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap().lines().count(), 3);
    }

    /// A group lands as consecutive lines chained onto whatever another
    /// handle (another process) appended before it.
    #[test]
    fn a_group_chains_onto_another_writers_lines() {
        let (dir, log) = open();
        let other = AuditLog::open(&dir.path().join("audit.jsonl")).unwrap();
        log.append("a", json!({})).unwrap();
        other.append("b", json!({})).unwrap();
        let group = log.append_all((0..3).map(|i| ("c".to_owned(), json!({"i": i}))).collect()).unwrap();
        assert_eq!(group.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4]);
        other.append("d", json!({})).unwrap();
        let report = crate::verify(&dir.path().join("audit.jsonl")).unwrap();
        assert!(report.first_broken.is_none(), "{:?}", report.first_broken);
        assert_eq!(report.lines, 6);
    }
}
