//! The key and value types of the store's tables: each with its redb type, and a byte form for
//! PostgreSQL that, for keys, sorts as redb sorts the values.

/// A key or value type: its redb type, and a byte form for PostgreSQL.
pub(in crate::store) trait Field: Sized {
    type Redb: redb::Value + 'static;
    fn to_redb(&self) -> <Self::Redb as redb::Value>::SelfType<'_>;
    fn from_redb(value: <Self::Redb as redb::Value>::SelfType<'_>) -> Self;
    /// Appends the byte form; for a key it sorts as the value does.
    fn put_bytes(&self, out: &mut Vec<u8>);
    fn from_bytes(bytes: &[u8]) -> Option<Self>;

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.put_bytes(&mut out);
        out
    }
}

/// A [`Field`] that can be a key: its byte form sorts as redb sorts the value.
pub(in crate::store) trait KeyField: Field<Redb: redb::Key> + Clone {}

impl Field for u64 {
    type Redb = u64;
    fn to_redb(&self) -> u64 {
        *self
    }
    fn from_redb(value: u64) -> Self {
        value
    }
    fn put_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}
impl KeyField for u64 {}

impl Field for u32 {
    type Redb = u32;
    fn to_redb(&self) -> u32 {
        *self
    }
    fn from_redb(value: u32) -> Self {
        value
    }
    fn put_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
}
impl KeyField for u32 {}

/// Signed integers sort as unsigned ones once the sign bit is flipped.
impl Field for i64 {
    type Redb = i64;
    fn to_redb(&self) -> i64 {
        *self
    }
    fn from_redb(value: i64) -> Self {
        value
    }
    fn put_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&((*self as u64) ^ (1 << 63)).to_be_bytes());
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some((u64::from_be_bytes(bytes.try_into().ok()?) ^ (1 << 63)) as i64)
    }
}
impl KeyField for i64 {}

impl Field for u8 {
    type Redb = u8;
    fn to_redb(&self) -> u8 {
        *self
    }
    fn from_redb(value: u8) -> Self {
        value
    }
    fn put_bytes(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [b] => Some(*b),
            _ => None,
        }
    }
}

/// A string is only ever the whole key or the last part of one, so its bytes need no end mark.
impl Field for String {
    type Redb = &'static str;
    fn to_redb(&self) -> &str {
        self
    }
    fn from_redb(value: &str) -> Self {
        value.to_owned()
    }
    fn put_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}
impl KeyField for String {}

impl Field for Vec<u8> {
    type Redb = &'static [u8];
    fn to_redb(&self) -> &[u8] {
        self
    }
    fn from_redb(value: &[u8]) -> Self {
        value.to_vec()
    }
    fn put_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
}

/// A fixed-width integer followed by another key part.
macro_rules! pair_key {
    ($b:ty, $redb_b:ty) => {
        impl Field for (u64, $b) {
            type Redb = (u64, $redb_b);
            fn to_redb(&self) -> <Self::Redb as redb::Value>::SelfType<'_> {
                (self.0, self.1.to_redb())
            }
            fn from_redb(value: <Self::Redb as redb::Value>::SelfType<'_>) -> Self {
                (value.0, <$b>::from_redb(value.1))
            }
            fn put_bytes(&self, out: &mut Vec<u8>) {
                self.0.put_bytes(out);
                self.1.put_bytes(out);
            }
            fn from_bytes(bytes: &[u8]) -> Option<Self> {
                let (first, rest) = bytes.split_at_checked(8)?;
                Some((u64::from_bytes(first)?, <$b>::from_bytes(rest)?))
            }
        }
        impl KeyField for (u64, $b) {}
    };
}
pair_key!(u32, u32);
pair_key!(i64, i64);
pair_key!(String, &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte form sorts as the values do: what makes a PostgreSQL range scan return redb's order.
    #[test]
    fn byte_forms_sort_as_their_values() {
        let ints = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        for pair in ints.windows(2) {
            assert!(pair[0].to_bytes() < pair[1].to_bytes(), "{pair:?}");
            assert_eq!(i64::from_bytes(&pair[0].to_bytes()), Some(pair[0]));
        }
        let keys =
            [(1u64, String::new()), (1, "a".into()), (1, "ab".into()), (1, "b".into()), (2, String::new())];
        for pair in keys.windows(2) {
            assert!(pair[0].to_bytes() < pair[1].to_bytes(), "{pair:?}");
        }
        let chunks = [(1u64, 0u32), (1, 255), (1, 256), (1, u32::MAX), (256, 0)];
        for pair in chunks.windows(2) {
            assert!(pair[0].to_bytes() < pair[1].to_bytes(), "{pair:?}");
            assert_eq!(<(u64, u32)>::from_bytes(&pair[1].to_bytes()), Some(pair[1]));
        }
        assert_eq!(
            <(u64, String)>::from_bytes(&(3u64, "task".to_owned()).to_bytes()),
            Some((3, "task".into()))
        );
        assert_eq!(u64::from_bytes(&[1, 2, 3]), None, "a short key is refused, not read as garbage");
    }
}
