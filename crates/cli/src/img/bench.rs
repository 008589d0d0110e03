//! qemu-img bench: a simple I/O benchmark, `depth` requests in flight on threads over the
//! image's positional I/O, with qemu-img's options, output and errors.

use super::args::{alias_longs, cache_mode, cvtnum, cvtnum_full, format_for_open, out, INT_MAX};
use super::{emsg, opt_last, show, Ctx, Fail, R};
use crate::getopt::{Opt, Spec};
use std::sync::{Condvar, Mutex};
use std::time::Instant;
use virtkit_image::{BlockDriver, Error};

const SPEC: Spec = Spec {
    short: "hf:t:c:d:o:s:S:wi:nUq",
    long: &[
        ("help", false),
        ("format", true),
        ("image-opts", false),
        ("cache", true),
        ("count", true),
        ("depth", true),
        ("offset", true),
        ("buffer-size", true),
        ("step-size", true),
        ("write", false),
        ("pattern", true),
        ("flush-interval", true),
        ("no-drain", false),
        ("aio", true),
        ("native", false),
        ("force-share", false),
        ("quiet", false),
        ("object", true),
    ],
};

const LONG: &[(&str, char)] = &[
    ("help", 'h'),
    ("format", 'f'),
    ("cache", 't'),
    ("count", 'c'),
    ("depth", 'd'),
    ("offset", 'o'),
    ("buffer-size", 's'),
    ("step-size", 'S'),
    ("write", 'w'),
    ("aio", 'i'),
    ("native", 'n'),
    ("force-share", 'U'),
    ("quiet", 'q'),
];

/// Read buffers are per request in flight; past this much memory fewer threads run.
const MAX_BUFFERS: u64 = 1 << 30;
/// Threads at most, whatever the depth.
const MAX_THREADS: u64 = 64;

#[derive(Clone)]
struct Params {
    count: u64,
    depth: u64,
    offset: u64,
    bufsize: u64,
    step: u64,
    write: bool,
    pattern: u8,
    flush_interval: u64,
    drain: bool,
    writethrough: bool,
}

pub fn run(ctx: &Ctx, args: &[String]) -> R {
    let a = alias_longs(ctx.parse(&SPEC, args)?, LONG);
    let mut p = Params {
        count: 75000,
        depth: 64,
        offset: 0,
        bufsize: 4096,
        step: 0,
        write: false,
        pattern: 0,
        flush_interval: 0,
        drain: true,
        writethrough: false,
    };
    let mut direct = false;
    let mut native = false;
    // In order, as qemu-img's getopt loop: the first bad value is the one reported.
    for o in &a.opts {
        match o {
            Opt::Short('h', _) => {
                out(HELP);
                return Ok(0);
            }
            Opt::Short('t', Some(v)) => {
                let (d, wt) = cache_mode(v).ok_or_else(|| Fail::new("Invalid cache mode"))?;
                direct = d;
                p.writethrough = wt;
            }
            Opt::Short('c', Some(v)) => {
                p.count = cvtnum_full("request count", v, false, 1, INT_MAX)?
            }
            Opt::Short('d', Some(v)) => p.depth = cvtnum_full("queue depth", v, false, 1, INT_MAX)?,
            Opt::Short('n', _) => native = true,
            Opt::Short('i', Some(v)) => match v.as_str() {
                "native" => native = true,
                "threads" => native = false,
                "io_uring" => native = false,
                _ => return Err(Fail::new(format!("Invalid aio option: {v}"))),
            },
            Opt::Short('o', Some(v)) => p.offset = cvtnum("offset", v, true)?,
            Opt::Short('s', Some(v)) => {
                p.bufsize = cvtnum_full("buffer size", v, true, 1, INT_MAX)?
            }
            Opt::Short('S', Some(v)) => p.step = cvtnum_full("step size", v, true, 0, INT_MAX)?,
            Opt::Short('w', _) => p.write = true,
            Opt::Long("pattern", Some(v)) => {
                p.pattern = cvtnum_full("pattern byte", v, false, 0, 0xff)? as u8
            }
            Opt::Long("flush-interval", Some(v)) => {
                p.flush_interval = cvtnum_full("flush interval", v, false, 0, INT_MAX)?
            }
            Opt::Long("no-drain", _) => p.drain = false,
            _ => {}
        }
    }
    let [file] = a.args.as_slice() else {
        return Err(Fail::new("Expecting one image file name"));
    };
    if !p.write && p.flush_interval > 0 {
        return Err(Fail::new(
            "--flush-interval is only available in write tests",
        ));
    }
    if p.flush_interval > 0 && p.flush_interval < p.depth {
        return Err(Fail::new("Flush interval can't be smaller than depth"));
    }
    let fmt = format_for_open(file, opt_last(&a, 'f').as_deref())?;
    if native && !direct {
        return Err(Fail::new(format!(
            "Could not open '{}': aio=native was specified, but it requires cache.direct=on, which was not specified.",
            show(file)
        )));
    }
    let img = super::open_image(ctx, file, fmt, p.write)?;
    if p.step == 0 {
        p.step = p.bufsize;
    }
    out(&format!(
        "Sending {} {} requests, {} bytes each, {} in parallel (starting at offset {}, step size {})\n",
        p.count,
        if p.write { "write" } else { "read" },
        p.bufsize,
        p.depth,
        p.offset,
        p.step
    ));
    if p.flush_interval > 0 {
        out(&format!(
            "Sending flush every {} requests\n",
            p.flush_interval
        ));
    }
    let t = Instant::now();
    bench(img.as_ref(), &p).map_err(|e| {
        let m = match e {
            // qemu's block layer answers a request past the end with EIO.
            Error::Invalid(_) => "Input/output error".to_string(),
            e => emsg(&e),
        };
        Fail::new(format!("Failed request: {m}"))
    })?;
    out(&format!(
        "Run completed in {:.3} seconds.\n",
        t.elapsed().as_secs_f64()
    ));
    Ok(0)
}

/// Shared state of the run: the next request to issue and the flush bookkeeping.
struct State {
    issued: u64,
    completed: u64,
    in_flight: u64,
    offset: u64,
    /// A drained flush is due or running: no new requests until it is done.
    flushing: bool,
    failed: Option<Error>,
}

fn bench(img: &dyn BlockDriver, p: &Params) -> Result<(), Error> {
    let size = img.virtual_size();
    let threads = p
        .depth
        .min(MAX_THREADS)
        .min((MAX_BUFFERS / p.bufsize).max(1))
        .min(p.count)
        .max(1);
    // The first request is where it is asked for; qemu-img fails it (EIO) when it does not fit.
    if p.offset.checked_add(p.bufsize).is_none_or(|e| e > size) {
        return Err(Error::Invalid("request past the end".into()));
    }
    let pattern = if p.write {
        vec![p.pattern; p.bufsize as usize]
    } else {
        Vec::new()
    };
    let st = Mutex::new(State {
        issued: 0,
        completed: 0,
        in_flight: 0,
        offset: p.offset,
        flushing: false,
        failed: None,
    });
    let cv = Condvar::new();
    let lock = || st.lock().unwrap_or_else(|e| e.into_inner());
    let fail = |e: Error| {
        let mut s = lock();
        s.failed.get_or_insert(e);
        cv.notify_all();
    };
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| {
                let mut buf = if p.write {
                    Vec::new()
                } else {
                    vec![0u8; p.bufsize as usize]
                };
                loop {
                    let off = {
                        let mut s = lock();
                        while s.flushing && s.failed.is_none() {
                            s = cv.wait(s).unwrap_or_else(|e| e.into_inner());
                        }
                        if s.failed.is_some() || s.issued >= p.count {
                            return;
                        }
                        s.issued += 1;
                        s.in_flight += 1;
                        let off = s.offset;
                        // qemu-img's walk: wrap within the image, the request length apart.
                        s.offset = if size <= p.bufsize {
                            0
                        } else {
                            (s.offset + p.step) % (size - p.bufsize)
                        };
                        off
                    };
                    let r = if p.write {
                        img.write_at(&pattern, off).and_then(|()| {
                            if p.writethrough {
                                img.flush()
                            } else {
                                Ok(())
                            }
                        })
                    } else {
                        img.read_at(&mut buf, off)
                    };
                    if let Err(e) = r {
                        fail(e);
                        return;
                    }
                    let flush_now = {
                        let mut s = lock();
                        s.in_flight -= 1;
                        s.completed += 1;
                        let due = p.flush_interval > 0 && s.completed % p.flush_interval == 0;
                        if due && p.drain {
                            s.flushing = true;
                            // The last request of the batch to finish issues the flush.
                            while s.in_flight > 0 && s.failed.is_none() {
                                s = cv.wait(s).unwrap_or_else(|e| e.into_inner());
                            }
                        }
                        cv.notify_all();
                        due
                    };
                    if flush_now {
                        let r = img.flush();
                        let mut s = lock();
                        s.flushing = false;
                        if let Err(e) = r {
                            s.failed.get_or_insert(e);
                        }
                        cv.notify_all();
                    }
                }
            });
        }
    });
    let s = st.into_inner().unwrap_or_else(|e| e.into_inner());
    match s.failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

const HELP: &str = r#"Usage:
Run simple image benchmark.  Usage:

  qemu-img bench [-f FMT | --image-opts] [-t CACHE] [-c COUNT] [-d DEPTH]
        [-o OFFSET] [-s BUFFER_SIZE] [-S STEP_SIZE] [-i AIO] [-n]
        [-w [--pattern PATTERN] [--flush-interval INTERVAL [--no-drain]]]

Arguments:
  -h, --help
     print this help and exit
  -q, --quiet
     quiet operations
  -f, --format FMT
     specify FILENAME format explicitly
  --image-opts
     indicates that FILENAME is a complete image specification
     instead of a file name (incompatible with --format)
  -t, --cache CACHE
     cache mode for FILENAME (writeback)
  -c, --count COUNT
     number of I/O requests to perform
  -s, --buffer-size BUFFER_SIZE
     size of each I/O request
  -d, --depth DEPTH
     number of requests to perform in parallel
  -o, --offset OFFSET
     start first request at this OFFSET
  -S, --step-size STEP_SIZE
     each next request offset increment
  -i, --aio AIO
     async-io backend (threads, native, io_uring)
  -n, --native
     use native AIO backend if possible
  -w, --write
     perform write test (default is read)
  --pattern PATTERN
     write this pattern byte instead of zero
  --flush-interval FLUSH_INTERVAL
     issue flush after this number of requests
  --no-drain
     do not wait when flushing pending requests
  -U, --force-share
     open images in shared mode for concurrent access

"#;
