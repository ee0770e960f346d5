pub mod node;
pub mod proxy;
