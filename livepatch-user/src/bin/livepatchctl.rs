//! `livepatchctl SOCKET COMMAND [ARG]`: sends one command to a process's livepatch control
//! socket and prints the answer (see `livepatch_user::control`). Exit status 1 when the
//! process answered with an error, 2 when it could not be reached.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: livepatchctl SOCKET apply PATH | disable HANDLE | reverse | list | libs | stalls | stats");
        std::process::exit(2);
    }
    let mut stream = match UnixStream::connect(&args[0]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("livepatchctl: {}: {e}", args[0]);
            std::process::exit(2);
        }
    };
    let line = args[1..].join(" ");
    if let Err(e) = writeln!(stream, "{line}") {
        eprintln!("livepatchctl: {e}");
        std::process::exit(2);
    }
    let mut failed = false;
    for answer in BufReader::new(stream).lines() {
        let Ok(answer) = answer else { std::process::exit(2) };
        if answer == "." {
            std::process::exit(i32::from(failed));
        }
        failed |= answer.starts_with("error:");
        println!("{answer}");
    }
    std::process::exit(2);
}
