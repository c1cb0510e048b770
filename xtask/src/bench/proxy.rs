//! A small userland TCP proxy, the docker-way setup's stand-in for `docker-proxy`: one thread
//! pair per connection copying bytes both ways (docker-proxy does the same with goroutines), with
//! TCP_NODELAY as Go sets it. Started by the bench itself as `xtask bench --proxy LISTEN TARGET`
//! inside the docker-way host namespace.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;

use anyhow::{Context, Result};

/// Accepts on `listen` forever and forwards each connection to `target`.
pub fn serve(listen: &str, target: &str) -> Result<()> {
    let target: SocketAddr = target
        .parse()
        .with_context(|| format!("bad proxy target {target:?}"))?;
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        thread::spawn(move || {
            let _ = forward(client, target);
        });
    }
    Ok(())
}

fn forward(client: TcpStream, target: SocketAddr) -> io::Result<()> {
    let server = TcpStream::connect(target)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (c2, s2) = (client.try_clone()?, server.try_clone()?);
    let up = thread::spawn(move || pipe(c2, s2));
    pipe(server, client);
    let _ = up.join();
    Ok(())
}

/// Copies until EOF with a large buffer (std's io::copy uses 8 KiB here, which costs several
/// times the syscalls of docker-proxy's splice-based copy), then half-closes `to`.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
