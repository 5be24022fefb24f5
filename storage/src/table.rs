//! Typed tables, as reth's `Table`: a table is a name, a key type and a value type, each with its
//! codec, and every read and write goes through [`TableRef`] (or the one-shot [`get`] and
//! [`get_meta`]), so no caller encodes a key or names a table by string. The tables themselves, and
//! the codecs that fix their bytes, are declared in [`crate::layout`].
//!
//! Not libmdbx's own `orm` module: its errors are MDBX's, naming neither the table nor the key,
//! and its encoders take values by value into fresh buffers, where ours write into a buffer a
//! batch reuses for all its rows.

use std::{borrow::Cow, marker::PhantomData};

use engine::CodecError;
use libmdbx::{NoWriteMap, RW, Transaction, TransactionKind, WriteFlags};

use crate::{
    StoreError,
    layout::{Meta, MetaField, hex},
};

/// A transaction of the store's environment.
pub(crate) type Txn<'env, K> = Transaction<'env, K, NoWriteMap>;

/// A named MDBX table of fixed key and value types.
pub(crate) trait Table {
    /// The table's name in the environment.
    const NAME: &'static str;
    /// The key, encoded to its fixed-width bytes.
    type Key: Key;
    /// The value as read back.
    type Value: DecodeValue;
    /// The value as written: the read type itself, or the parts the writer holds (a header and
    /// its certificate), or bytes it already encoded (a block, whose encoding yields the ids).
    type Write<'a>: EncodeValue + Copy;
}

/// A row of `T`, decoded.
pub(crate) type Row<T> = (<T as Table>::Key, <T as Table>::Value);

/// A key's codec. Keys are fixed-width, so they encode on the stack.
pub(crate) trait Key: Sized {
    /// The encoded key.
    type Bytes: AsRef<[u8]>;
    fn encode_key(&self) -> Self::Bytes;
    fn decode_key(bytes: &[u8]) -> Result<Self, Invalid>;
}

/// Decodes a stored value. Stored bytes are untrusted: a decoder checks every length against
/// the bytes it is given (and the engine codec's bounds) and returns [`Invalid`], never panics.
pub(crate) trait DecodeValue: Sized {
    fn decode_value(bytes: &[u8]) -> Result<Self, Invalid>;
}

/// Encodes a value to write.
pub(crate) trait EncodeValue {
    /// The value's bytes: written into `buf` (cleared first), or the value itself when it
    /// already is bytes. A caller writing many rows passes the same `buf` to each.
    fn encode_value<'b>(&'b self, buf: &'b mut Vec<u8>) -> &'b [u8];
}

impl<T: EncodeValue + ?Sized> EncodeValue for &T {
    fn encode_value<'b>(&'b self, buf: &'b mut Vec<u8>) -> &'b [u8] {
        (**self).encode_value(buf)
    }
}

/// Why stored bytes do not decode; [`Invalid::at`] names the table and key.
#[derive(Debug)]
pub(crate) enum Invalid {
    /// The engine's canonical codec refused the bytes.
    Codec(CodecError),
    /// The bytes break the store's own layout (a length, an order, a reserved value).
    Layout(String),
}

impl From<CodecError> for Invalid {
    fn from(error: CodecError) -> Self {
        Self::Codec(error)
    }
}

impl Invalid {
    pub(crate) fn layout(why: impl Into<String>) -> Self {
        Self::Layout(why.into())
    }

    /// The store's error for a row of `table` at `key`.
    pub(crate) fn at(self, table: &'static str, key: &[u8]) -> StoreError {
        match self {
            Self::Codec(error) => StoreError::Decode { table, key: hex(key), error },
            Self::Layout(why) => StoreError::Corrupt { table, why },
        }
    }
}

/// A row's key and value, each decoded, errors naming `T`.
fn decode_row<T: Table>(key: &[u8], value: &[u8]) -> Result<Row<T>, StoreError> {
    // The value first, as the readers did before the tables were typed: a row whose key and
    // value are both bad reports the value's error.
    let v = T::Value::decode_value(value).map_err(|e| e.at(T::NAME, key))?;
    let k = T::Key::decode_key(key).map_err(|e| e.at(T::NAME, key))?;
    Ok((k, v))
}

/// Table `T` opened in a transaction: open it once for many reads or writes.
pub(crate) struct TableRef<'t, 'env, T, K: TransactionKind> {
    txn: &'t Txn<'env, K>,
    table: libmdbx::Table<'t>,
    _t: PhantomData<T>,
}

/// Opens table `T` in `txn`.
pub(crate) fn open<'t, 'env, T: Table, K: TransactionKind>(
    txn: &'t Txn<'env, K>,
) -> Result<TableRef<'t, 'env, T, K>, StoreError> {
    Ok(TableRef { txn, table: txn.open_table(Some(T::NAME))?, _t: PhantomData })
}

/// The value of `T` at `key`, if any.
pub(crate) fn get<T: Table, K: TransactionKind>(
    txn: &Txn<'_, K>,
    key: &T::Key,
) -> Result<Option<T::Value>, StoreError> {
    open::<T, K>(txn)?.get(key)
}

impl<'t, T: Table, K: TransactionKind> TableRef<'t, '_, T, K> {
    pub(crate) fn get(&self, key: &T::Key) -> Result<Option<T::Value>, StoreError> {
        let key = key.encode_key();
        let Some(bytes) = self.txn.get::<Cow<'_, [u8]>>(&self.table, key.as_ref())? else { return Ok(None) };
        T::Value::decode_value(&bytes).map(Some).map_err(|e| e.at(T::NAME, key.as_ref()))
    }

    /// Whether `key` holds a value (without decoding it).
    pub(crate) fn contains(&self, key: &T::Key) -> Result<bool, StoreError> {
        Ok(self.txn.get::<()>(&self.table, key.encode_key().as_ref())?.is_some())
    }

    /// Rows in the table.
    pub(crate) fn entries(&self) -> Result<usize, StoreError> {
        Ok(self.txn.table_stat(&self.table)?.entries())
    }

    /// Bytes of the table's pages (branch, leaf and overflow; in a write transaction, with its
    /// own changes).
    pub(crate) fn bytes(&self) -> Result<u64, StoreError> {
        let stat = self.txn.table_stat(&self.table)?;
        let pages = stat.branch_pages() + stat.leaf_pages() + stat.overflow_pages();
        Ok(pages as u64 * u64::from(stat.page_size()))
    }

    /// The last key (without decoding its value).
    pub(crate) fn last_key(&self) -> Result<Option<T::Key>, StoreError> {
        let mut cursor = self.txn.cursor(&self.table)?;
        let Some((key, ())) = cursor.last::<Cow<'_, [u8]>, ()>()? else { return Ok(None) };
        T::Key::decode_key(&key).map(Some).map_err(|e| e.at(T::NAME, &key))
    }

    /// A cursor over the table, with a buffer its writes reuse.
    pub(crate) fn cursor(&self) -> Result<Cursor<'t, T, K>, StoreError> {
        Ok(Cursor { inner: self.txn.cursor(&self.table)?, buf: Vec::new(), _t: PhantomData })
    }
}

impl<T: Table> TableRef<'_, '_, T, RW> {
    /// Deletes the row at `key`; whether there was one.
    pub(crate) fn delete(&self, key: &T::Key) -> Result<bool, StoreError> {
        Ok(self.txn.del(&self.table, key.encode_key().as_ref(), None)?)
    }

    /// Writes `value` at `key`, encoding it in `buf`.
    pub(crate) fn put(
        &self,
        key: &T::Key,
        value: T::Write<'_>,
        flags: WriteFlags,
        buf: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        Ok(self.txn.put(&self.table, key.encode_key(), value.encode_value(buf), flags)?)
    }
}

/// A cursor over table `T`.
pub(crate) struct Cursor<'t, T, K: TransactionKind> {
    inner: libmdbx::Cursor<'t, K>,
    /// Encodes each written value: one buffer for all the rows of a batch.
    buf: Vec<u8>,
    _t: PhantomData<T>,
}

impl<'t, T: Table, K: TransactionKind> Cursor<'t, T, K> {
    /// Every row from the first (`from = None`) or from the first key at or after `from`.
    pub(crate) fn rows(
        &mut self,
        from: Option<&T::Key>,
    ) -> impl Iterator<Item = Result<Row<T>, StoreError>> + '_ {
        let iter = match from {
            None => self.inner.iter_start::<Cow<'_, [u8]>, Cow<'_, [u8]>>(),
            Some(key) => self.inner.iter_from::<Cow<'_, [u8]>, Cow<'_, [u8]>>(key.encode_key().as_ref()),
        };
        iter.map(|row| {
            let (key, value) = row?;
            decode_row::<T>(&key, &value)
        })
    }

    /// The first row.
    pub(crate) fn first(&mut self) -> Result<Option<Row<T>>, StoreError> {
        let Some((key, value)) = self.inner.first::<Cow<'_, [u8]>, Cow<'_, [u8]>>()? else { return Ok(None) };
        decode_row::<T>(&key, &value).map(Some)
    }

    /// Moves to `key` and returns its value, if the table holds it.
    pub(crate) fn set(&mut self, key: &T::Key) -> Result<Option<T::Value>, StoreError> {
        let key = key.encode_key();
        let Some(bytes) = self.inner.set::<Cow<'_, [u8]>>(key.as_ref())? else { return Ok(None) };
        T::Value::decode_value(&bytes).map(Some).map_err(|e| e.at(T::NAME, key.as_ref()))
    }
}

impl<T: Table> Cursor<'_, T, RW> {
    /// Writes `value` at `key`, through the cursor (MDBX finds the key from the page it last
    /// wrote rather than from the root: writes in key order touch each page once).
    pub(crate) fn put(
        &mut self,
        key: &T::Key,
        value: T::Write<'_>,
        flags: WriteFlags,
    ) -> Result<(), StoreError> {
        Ok(self.inner.put(key.encode_key().as_ref(), value.encode_value(&mut self.buf), flags)?)
    }

    /// Deletes the row under the cursor.
    pub(crate) fn del(&mut self) -> Result<(), StoreError> {
        Ok(self.inner.del(WriteFlags::empty())?)
    }
}

impl<K: TransactionKind> TableRef<'_, '_, Meta, K> {
    /// The `meta` row `F`, if any, decoded as its own type.
    pub(crate) fn field<F: MetaField>(&self) -> Result<Option<F::Value>, StoreError> {
        let Some(bytes) = self.txn.get::<Cow<'_, [u8]>>(&self.table, F::KEY)? else { return Ok(None) };
        F::Value::decode_value(&bytes).map(Some).map_err(|e| match e {
            Invalid::Layout(why) => {
                StoreError::Corrupt { table: Meta::NAME, why: format!("{} {why}", hex(F::KEY)) }
            }
            codec => codec.at(Meta::NAME, F::KEY),
        })
    }
}

impl TableRef<'_, '_, Meta, RW> {
    /// Writes the `meta` row `F`.
    pub(crate) fn put_field<F: MetaField>(
        &self,
        value: F::Write<'_>,
        flags: WriteFlags,
    ) -> Result<(), StoreError> {
        Ok(self.txn.put(&self.table, F::KEY, value.encode_value(&mut Vec::new()), flags)?)
    }
}

/// The `meta` row `F`, if any.
pub(crate) fn get_meta<F: MetaField, K: TransactionKind>(
    txn: &Txn<'_, K>,
) -> Result<Option<F::Value>, StoreError> {
    open::<Meta, K>(txn)?.field::<F>()
}
