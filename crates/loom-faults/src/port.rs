//! Free TCP ports on the loopback interface.

use std::net::{Ipv4Addr, TcpListener};

/// A TCP port on 127.0.0.1 that was free a moment ago: the OS picks it for a listener bound to
/// port 0, which is then dropped so a server can bind it.
///
/// # Panics
/// If the loopback interface cannot be bound at all (no usable network stack).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address of a bound listener").port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_nonzero_and_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is free again");
    }

    #[test]
    fn free_ports_differ_while_held() {
        let first = free_port();
        let _held = TcpListener::bind((Ipv4Addr::LOCALHOST, first)).unwrap();
        assert_ne!(free_port(), first);
    }
}
