//! The settings keys a binary reads, derived from its settings type and its built-in defaults
//! rather than listed by hand: every binary prints them (`<binary> settings-keys`), and the
//! deployment's configuration test (infra/cdk) holds each service's environment against them.
//!
//! The keys come from walking the settings type with a deserializer that offers every field
//! the type asks for (so each leaf of the structure is seen once, with its path). A key is
//! **required** when the type refuses to deserialize without it (no `Option`, no
//! `#[serde(default)]`) and the built-in defaults do not give it either: a deployment must set
//! it, or the binary does not start.

use std::cell::RefCell;
use std::fmt;

use serde::de::value::{Error as WalkError, StrDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde::Serialize;

use crate::settings::Defaults;

/// The environment variables' prefix.
const PREFIX: &str = "ORDERPIPE";

/// One setting a binary reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingKey {
    /// Its environment variable, `ORDERPIPE_<SECTION>__<KEY>`.
    pub env: String,
    /// Whether the binary needs it given: the type has no value without it and the built-in
    /// defaults give none.
    pub required: bool,
}

impl fmt::Display for SettingKey {
    /// `ORDERPIPE_X__Y required` or `ORDERPIPE_X__Y optional`: the line `settings-keys` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let need = if self.required {
            "required"
        } else {
            "optional"
        };
        write!(f, "{} {need}", self.env)
    }
}

/// Every setting `T` reads, in the order of its fields, and whether each is required given the
/// built-in `defaults`.
///
/// Panics if `T` cannot be walked (a field type that refuses every placeholder value); the
/// binaries' tests print their keys, so such a type is caught there.
pub fn settings_keys<T: DeserializeOwned>(defaults: &Defaults) -> Vec<SettingKey> {
    let seen = RefCell::new(Vec::new());
    if let Err(error) = T::deserialize(Walker::new(&seen, None)) {
        panic!("the settings type cannot be walked: {error}");
    }
    let defaults = defaults.config().ok();
    let paths = seen.into_inner();
    paths
        .iter()
        .map(|path| {
            let unused = RefCell::new(Vec::new());
            let needed_by_type = T::deserialize(Walker::new(&unused, Some(path))).is_err();
            SettingKey {
                env: env_name(path),
                required: needed_by_type && !defaults_give(defaults.as_ref(), path),
            }
        })
        .collect()
}

/// Prints `keys` on stdout, one line each: the binaries' `settings-keys` subcommand.
pub fn print(keys: &[SettingKey]) {
    for key in keys {
        println!("{key}");
    }
}

/// The environment variable of the settings key `key`, a dotted path
/// (`dynamodb.leases_table` -> `ORDERPIPE_DYNAMODB__LEASES_TABLE`).
pub fn env_var(key: &str) -> String {
    env_name(&key.split('.').collect::<Vec<_>>())
}

fn env_name(path: &[&str]) -> String {
    let mut name = String::from(PREFIX);
    for (index, part) in path.iter().enumerate() {
        name.push_str(if index == 0 { "_" } else { "__" });
        name.push_str(&part.to_uppercase());
    }
    name
}

/// Whether `defaults` gives `path` a value. Defaults that do not parse give none
/// (the binaries' tests load their defaults, so such defaults cannot ship).
fn defaults_give(defaults: Option<&config::Config>, path: &[&str]) -> bool {
    defaults.is_some_and(|config| config.get::<config::Value>(&path.join(".")).is_ok())
}

/// Deserializes a settings type with every field present and a placeholder at every leaf,
/// recording the leaves' paths; the field at `skip` is left out, to see whether the type needs
/// it.
struct Walker<'a> {
    seen: &'a RefCell<Vec<Vec<&'static str>>>,
    path: Vec<&'static str>,
    skip: Option<&'a [&'static str]>,
}

impl<'a> Walker<'a> {
    fn new(seen: &'a RefCell<Vec<Vec<&'static str>>>, skip: Option<&'a [&'static str]>) -> Self {
        Self {
            seen,
            path: Vec::new(),
            skip,
        }
    }

    fn leaf(&self) {
        self.seen.borrow_mut().push(self.path.clone());
    }
}

macro_rules! leaf {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
                self.leaf();
                visitor.$visit($($value)?)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Walker<'_> {
    type Error = WalkError;

    leaf! {
        deserialize_any => visit_str(""),
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i8(0),
        deserialize_i16 => visit_i16(0),
        deserialize_i32 => visit_i32(0),
        deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u8(0),
        deserialize_u16 => visit_u16(0),
        deserialize_u32 => visit_u32(0),
        deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f32(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char('0'),
        deserialize_str => visit_str(""),
        deserialize_string => visit_str(""),
        deserialize_bytes => visit_bytes(&[]),
        deserialize_byte_buf => visit_bytes(&[]),
        deserialize_unit => visit_unit(),
        deserialize_identifier => visit_str(""),
        deserialize_ignored_any => visit_unit(),
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        self.leaf();
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        self.leaf();
        visitor.visit_seq(Empty)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        self.leaf();
        visitor.visit_map(Empty)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        visitor.visit_map(Fields {
            walker: self,
            fields: fields.iter(),
            current: None,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        self.leaf();
        let first = variants
            .first()
            .ok_or_else(|| de::Error::custom("an enum without variants"))?;
        visitor.visit_enum(FirstVariant(first))
    }
}

/// A struct's fields, every one present (but the skipped one), each value walked in turn.
struct Fields<'a> {
    walker: Walker<'a>,
    fields: std::slice::Iter<'static, &'static str>,
    current: Option<&'static str>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = WalkError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, WalkError> {
        for field in self.fields.by_ref() {
            let mut path = self.walker.path.clone();
            path.push(field);
            if self.walker.skip == Some(path.as_slice()) {
                continue;
            }
            self.current = Some(field);
            let key: StrDeserializer<'_, WalkError> = field.into_deserializer();
            return seed.deserialize(key).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, WalkError> {
        let field = self
            .current
            .take()
            .ok_or_else(|| de::Error::custom("a value before its key"))?;
        let mut path = self.walker.path.clone();
        path.push(field);
        seed.deserialize(Walker {
            seen: self.walker.seen,
            path,
            skip: self.walker.skip,
        })
    }
}

/// An empty sequence or map: a list or table setting holds nothing in the walk.
struct Empty;

impl<'de> SeqAccess<'de> for Empty {
    type Error = WalkError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        _seed: T,
    ) -> Result<Option<T::Value>, WalkError> {
        Ok(None)
    }
}

impl<'de> MapAccess<'de> for Empty {
    type Error = WalkError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        _seed: K,
    ) -> Result<Option<K::Value>, WalkError> {
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        _seed: V,
    ) -> Result<V::Value, WalkError> {
        Err(de::Error::custom("an empty map has no values"))
    }
}

/// An enum setting (a unit variant, as settings' enums are) takes its first variant.
struct FirstVariant(&'static str);

impl<'de> EnumAccess<'de> for FirstVariant {
    type Error = WalkError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), WalkError> {
        let name: StrDeserializer<'_, WalkError> = self.0.into_deserializer();
        Ok((seed.deserialize(name)?, self))
    }
}

impl<'de> VariantAccess<'de> for FirstVariant {
    type Error = WalkError;

    fn unit_variant(self) -> Result<(), WalkError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        _seed: T,
    ) -> Result<T::Value, WalkError> {
        Err(de::Error::custom("settings enums are unit variants"))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, WalkError> {
        Err(de::Error::custom("settings enums are unit variants"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, WalkError> {
        Err(de::Error::custom("settings enums are unit variants"))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        database: Database,
        queue_url: Option<String>,
        #[serde(default)]
        tuning: Tuning,
        mode: Mode,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Database {
        host: String,
        port: u16,
        password: Option<secrecy::SecretString>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    #[allow(dead_code)]
    struct Tuning {
        batch: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Mode {
        Json,
        Text,
    }

    fn key(env: &str, required: bool) -> SettingKey {
        SettingKey {
            env: env.into(),
            required,
        }
    }

    #[test]
    fn every_leaf_is_a_key_and_only_what_nothing_gives_is_required() {
        let defaults = Defaults {
            toml: "[database]\nport = 5432\n",
            values: vec![("mode", "json".into())],
        };
        let keys = settings_keys::<Sample>(&defaults);
        assert_eq!(
            keys,
            [
                key("ORDERPIPE_DATABASE__HOST", true),
                key("ORDERPIPE_DATABASE__PORT", false),
                key("ORDERPIPE_DATABASE__PASSWORD", false),
                key("ORDERPIPE_QUEUE_URL", false),
                key("ORDERPIPE_TUNING__BATCH", false),
                key("ORDERPIPE_MODE", false),
            ]
        );
    }

    #[test]
    fn a_dotted_key_becomes_its_variable() {
        assert_eq!(
            env_var("dynamodb.leases_table"),
            "ORDERPIPE_DYNAMODB__LEASES_TABLE"
        );
    }

    #[test]
    fn a_key_prints_as_its_variable_and_whether_it_is_required() {
        assert_eq!(
            key("ORDERPIPE_DATABASE__HOST", true).to_string(),
            "ORDERPIPE_DATABASE__HOST required"
        );
    }
}
