//! What every WebSocket of the bridge shares, whoever opens it (the Media Stream, the
//! recogniser's socket, the stand-ins and the load generator).

/// Bytes a WebSocket reads at once. tungstenite's default (128 KiB, zero-filled before each
/// read) made every call hold 128 KiB per socket; a Twilio media message is about 400 bytes and
/// a recogniser's transcript under 1 KiB, and a larger message still grows the buffer as needed.
/// tungstenite zero-fills the free part of the buffer before every read, so a bigger one costs
/// CPU on every frame too (4 KiB was 2.5 % of the server's time at 200 calls).
pub const SOCKET_READ_BUFFER: usize = 1024;
