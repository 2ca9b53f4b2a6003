//! Finding the cluster: `--address`, `RAY_ADDRESS`, or the head recorded on this
//! machine; and this node's own IP.

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs, UdpSocket};
use std::path::Path;

use anyhow::{Result, anyhow};
use ray_common::session;

/// Resolves `auto` (or nothing) to the recorded head address; checks HOST:PORT.
pub fn resolve_gcs_address(given: Option<&str>, temp_root: &Path) -> Result<String> {
    let given = given.map(str::trim).filter(|s| !s.is_empty());
    let from_env = std::env::var("RAY_ADDRESS").ok().filter(|s| !s.trim().is_empty());
    let addr = match given {
        Some("auto") | None => match from_env.filter(|a| a != "auto") {
            Some(a) => a,
            None => session::read_current_cluster(temp_root).ok_or_else(|| {
                anyhow!(
                    "Could not find any running Ray instance. Please specify the one to connect to by setting \
                     the `--address` flag or `RAY_ADDRESS` environment variable (no address recorded in {:?}).",
                    session::current_cluster_file(temp_root)
                )
            })?,
        },
        Some(a) => a.to_string(),
    };
    let addr = addr.trim().trim_start_matches("ray://").trim_start_matches("http://").to_string();
    let valid = addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid {
        return Err(anyhow!("--address {addr:?}: expected HOST:PORT, e.g. 127.0.0.1:6379"));
    }
    Ok(addr)
}

/// `ip:port`, bracketing IPv6.
pub fn join_host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{v4}:{port}"),
    }
}

/// The local address the kernel would use to reach `target` (no packet is sent:
/// connecting a UDP socket only picks a route).
pub fn local_ip_towards(target: &str) -> Option<IpAddr> {
    let dest = target.to_socket_addrs().ok()?.next()?;
    let bind = if dest.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(dest).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// This machine's IP as other machines would see it (the default route's
/// address), or 127.0.0.1 when there is no route.
pub fn detect_node_ip() -> IpAddr {
    local_ip_towards("8.8.8.8:80").unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_addresses_are_checked() {
        let dir = std::path::Path::new("/nonexistent-ray-root");
        assert_eq!(resolve_gcs_address(Some("10.1.2.3:6379"), dir).unwrap(), "10.1.2.3:6379");
        assert!(resolve_gcs_address(Some("10.1.2.3"), dir).is_err());
        assert!(resolve_gcs_address(Some("host:notaport"), dir).is_err());
    }

    #[test]
    fn route_to_loopback_is_loopback() {
        assert_eq!(local_ip_towards("127.0.0.1:6379"), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(join_host_port("::1".parse().unwrap(), 5), "[::1]:5");
    }
}
