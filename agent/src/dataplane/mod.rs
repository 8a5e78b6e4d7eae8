//! The kernel side: everything that programs or reads the kernel lives here.

pub mod nft;
