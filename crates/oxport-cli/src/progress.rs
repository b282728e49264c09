//! indicatif implementation of the libraries' progress traits.
