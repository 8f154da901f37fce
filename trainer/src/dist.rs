//! Data parallelism across processes: ranks 1…N−1 connect to rank 0 over TCP (loopback on one
//! machine, or a cluster network), and every step the ranks sum their gradients (and their
//! token counts and losses) through rank 0. Rank 0 adds the contributions in rank order and
//! sends the one result back, so every rank holds the same bytes and takes the same optimizer
//! step: the weights never drift apart.
//!
//! The wire format is little-endian: a u64 count, then that many f64 (counts, losses) or f32
//! (gradients). Rank 0 listens on `master` (`train.master`, or `MASTER_ADDR:MASTER_PORT` as
//! torchrun sets them); the others retry connecting for up to two minutes.

use crate::{Error, Result};
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The links of one rank: rank 0 holds one stream per other rank, the others one to rank 0.
pub struct Comm {
    rank: usize,
    world: usize,
    /// Rank 0: the streams of ranks 1…N−1 in rank order; other ranks: the stream to rank 0.
    peers: Vec<(BufReader<TcpStream>, BufWriter<TcpStream>)>,
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::Parallel(format!("{what}: {e}"))
}

/// A read from `rank` failed: when it closed the link, say so.
fn from_rank(rank: usize, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::Parallel(format!(
            "rank {rank} closed its connection mid-step (it stopped: see its own output)"
        ))
    } else {
        io(&format!("receive from rank {rank}"), e)
    }
}

impl Comm {
    /// Connect `rank` of `world` through `master` (`host:port`).
    pub fn connect(rank: usize, world: usize, master: &str) -> Result<Comm> {
        let mut peers = Vec::new();
        if rank == 0 {
            let listener =
                TcpListener::bind(master).map_err(|e| io(&format!("listen on {master}"), e))?;
            let mut by_rank: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
            for _ in 1..world {
                let (mut s, _) = listener.accept().map_err(|e| io("accept a rank", e))?;
                let mut buf = [0u8; 8];
                s.read_exact(&mut buf)
                    .map_err(|e| io("read a rank's hello", e))?;
                let r = u64::from_le_bytes(buf) as usize;
                if r == 0 || r >= world || by_rank[r].is_some() {
                    return Err(Error::Config(format!(
                        "data parallel: a peer said it is rank {r} (world {world})"
                    )));
                }
                by_rank[r] = Some(s);
            }
            for s in by_rank.into_iter().skip(1).flatten() {
                peers.push(Self::pair(s)?);
            }
        } else {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut s = loop {
                match TcpStream::connect(master) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => {
                        return Err(io(&format!("connect to rank 0 at {master}"), e))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            };
            s.write_all(&(rank as u64).to_le_bytes())
                .map_err(|e| io("send hello", e))?;
            peers.push(Self::pair(s)?);
        }
        Ok(Comm { rank, world, peers })
    }

    fn pair(s: TcpStream) -> Result<(BufReader<TcpStream>, BufWriter<TcpStream>)> {
        s.set_nodelay(true).map_err(|e| io("set nodelay", e))?;
        let r = s.try_clone().map_err(|e| io("clone a stream", e))?;
        Ok((BufReader::new(r), BufWriter::new(s)))
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Ranks in all.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Sum `values` over the ranks, in place (every rank ends with the same bytes).
    pub fn sum_f32(&mut self, values: &mut [f32]) -> Result<()> {
        self.sum(
            values,
            4,
            |v, b| b.copy_from_slice(&v.to_le_bytes()),
            |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        )
    }

    /// Sum `values` over the ranks, in place (counts and losses, exactly in f64).
    pub fn sum_f64(&mut self, values: &mut [f64]) -> Result<()> {
        self.sum(
            values,
            8,
            |v, b| b.copy_from_slice(&v.to_le_bytes()),
            |b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                f64::from_le_bytes(a)
            },
        )
    }

    /// The sum streams in chunks: rank 0 adds chunk k of every rank (in rank order) and sends
    /// it back while the ranks still send chunk k+1, and each other rank receives on a second
    /// thread while it sends, so the result returns about as fast as one copy of the values
    /// crosses the link.
    fn sum<T: Copy + Send + Sync + std::ops::AddAssign>(
        &mut self,
        values: &mut [T],
        width: usize,
        put: impl Fn(T, &mut [u8]) + Sync,
        get: impl Fn(&[u8]) -> T + Sync,
    ) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        let n = values.len();
        let chunk = (CHUNK_BYTES / width).max(1);
        let pack = |v: &[T], bytes: &mut Vec<u8>| {
            bytes.clear();
            bytes.resize(v.len() * width, 0);
            for (x, b) in v.iter().zip(bytes.chunks_mut(width)) {
                put(*x, b);
            }
        };
        let header = |w: &mut BufWriter<TcpStream>| -> Result<()> {
            w.write_all(&(n as u64).to_le_bytes())
                .map_err(|e| io("send", e))
        };
        let check = |r: &mut BufReader<TcpStream>, from: usize| -> Result<()> {
            let mut head = [0u8; 8];
            r.read_exact(&mut head).map_err(|e| from_rank(from, e))?;
            let got = u64::from_le_bytes(head) as usize;
            if got != n {
                return Err(Error::Parallel(format!(
                    "rank {from} sent {got} values where {n} were expected (do all ranks train the same model?)"
                )));
            }
            Ok(())
        };
        if self.rank == 0 {
            for (i, (r, w)) in self.peers.iter_mut().enumerate() {
                check(r, i + 1)?;
                header(w)?;
            }
            let mut bytes = Vec::new();
            for part in values.chunks_mut(chunk) {
                bytes.resize(part.len() * width, 0);
                for (i, (r, _)) in self.peers.iter_mut().enumerate() {
                    r.read_exact(&mut bytes).map_err(|e| from_rank(i + 1, e))?;
                    for (v, b) in part.iter_mut().zip(bytes.chunks(width)) {
                        *v += get(b);
                    }
                }
                pack(part, &mut bytes);
                for (_, w) in self.peers.iter_mut() {
                    w.write_all(&bytes).map_err(|e| io("send", e))?;
                }
            }
            for (_, w) in self.peers.iter_mut() {
                w.flush().map_err(|e| io("send", e))?;
            }
            return Ok(());
        }
        let (r, w) = &mut self.peers[0];
        let mut out = Vec::new();
        pack(values, &mut out);
        std::thread::scope(|scope| -> Result<()> {
            let receiver = scope.spawn(|| -> Result<()> {
                check(r, 0)?;
                let mut bytes = vec![0u8; chunk * width];
                for part in values.chunks_mut(chunk) {
                    let bytes = &mut bytes[..part.len() * width];
                    r.read_exact(bytes).map_err(|e| from_rank(0, e))?;
                    for (v, b) in part.iter_mut().zip(bytes.chunks(width)) {
                        *v = get(b);
                    }
                }
                Ok(())
            });
            let sent = header(w)
                .and_then(|_| w.write_all(&out).map_err(|e| io("send", e)))
                .and_then(|_| w.flush().map_err(|e| io("send", e)));
            let received = receiver.join().unwrap_or_else(|_| {
                Err(Error::Config("data parallel: the receiver failed".into()))
            });
            sent.and(received)
        })
    }
}

/// Bytes per chunk of a streamed sum.
const CHUNK_BYTES: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rank_that_stops_is_named_by_the_others() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").expect("port");
            l.local_addr().expect("addr").to_string()
        };
        let a = addr.clone();
        let quitter = std::thread::spawn(move || {
            // Connects, then stops before the step's sum.
            drop(Comm::connect(1, 2, &a).expect("connect"));
        });
        let mut c = Comm::connect(0, 2, &addr).expect("connect");
        quitter.join().expect("rank 1");
        let err = c.sum_f32(&mut [1.0, 2.0]).expect_err("rank 1 is gone");
        assert!(
            err.to_string()
                .contains("data parallel: rank 1 closed its connection"),
            "{err}"
        );
    }

    #[test]
    fn three_ranks_sum_to_the_same_bytes() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").expect("port");
            l.local_addr().expect("addr").to_string()
        };
        let handles: Vec<_> = (0..3)
            .map(|rank| {
                let addr = addr.clone();
                std::thread::spawn(move || {
                    let mut c = Comm::connect(rank, 3, &addr).expect("connect");
                    let mut v = vec![rank as f32 + 0.5, 1.0, -(rank as f32)];
                    c.sum_f32(&mut v).expect("sum");
                    let mut n = vec![rank as f64 * 10.0];
                    c.sum_f64(&mut n).expect("sum");
                    // Several chunks and a ragged end; rank r holds i·(r+1) at i.
                    let len = 3 * (CHUNK_BYTES / 4) + 5;
                    let mut big: Vec<f32> = (0..len).map(|i| (i * (rank + 1)) as f32).collect();
                    c.sum_f32(&mut big).expect("sum");
                    assert!(big
                        .iter()
                        .enumerate()
                        .all(|(i, &x)| x == (i * 6) as f32 || (i * 6) >= 1 << 24));
                    (v, n, big)
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("rank"))
            .collect();
        for (v, n, big) in &results {
            assert_eq!(v, &vec![4.5, 3.0, -3.0]);
            assert_eq!(n, &vec![30.0]);
            assert_eq!(big, &results[0].2, "every rank holds the same bytes");
        }
    }
}
