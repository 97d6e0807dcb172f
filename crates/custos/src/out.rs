//! Standard output of the command line. `println!` panics when its reader has gone away
//! (`custos audit search --json | head -3`: Rust ignores SIGPIPE, so the write fails instead),
//! which printed a backtrace after the lines the reader wanted. Here a reader that went away
//! ends the command quietly, with exit code 1 rather than 0 — the output was not all taken, and
//! `custos audit verify | head -1` must never pass for "intact" in a pipeline that checks every
//! command's status. Any other failure to write (a full disk under `> file`) is said on stderr
//! with the same code.

use std::io::Write;

/// Writes `args` to standard output and flushes it, ending the process as above when it cannot.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_fmt(args).and_then(|()| out.flush()) {
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("custos: error: writing the output: {error}");
        }
        std::process::exit(i32::from(crate::EXIT_FAILURE));
    }
}

/// `print!` through [`write`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}

/// `println!` through [`write`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};
