//! Configuration of ai-cache (one object, global or per `_rules_` entry). Key names follow
//! Higress's ai-cache where it has them (`cacheKeyStrategy`, `enableSemanticCache`, `cache`,
//! `embedding`, `vector`, `serviceName`, `cacheTTL`, `threshold`, …). Higress's earlier
//! top-level `cacheTTL` and `cacheKeyPrefix` set those of `cache` when it has none.

use aigw_shared::rules::{parse_object, ConfigError};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// What the cache key is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Strategy {
    /// The text of the last user message (Higress's default).
    #[serde(rename = "lastQuestion")]
    LastQuestion,
    /// The texts of every user message, in order.
    #[serde(rename = "allQuestions")]
    AllQuestions,
    /// Every message and every parameter that changes the answer (the default).
    #[serde(rename = "fullRequest")]
    FullRequest,
    /// The cache is off.
    #[serde(rename = "disabled")]
    Disabled,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::LastQuestion => "lastQuestion",
            Strategy::AllQuestions => "allQuestions",
            Strategy::FullRequest => "fullRequest",
            Strategy::Disabled => "disabled",
        }
    }
}

/// Whose answers a request may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everyone asking the same model shares answers.
    Global,
    /// Answers are kept apart per consumer (`consumerHeader`; the default). Requests naming
    /// none share the anonymous scope.
    Consumer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheType {
    /// Envoy shared data: every worker of one Envoy.
    Local,
    /// Redis, reached through Webdis.
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingType {
    Openai,
    Azure,
    Dashscope,
    Ollama,
    Cohere,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorType {
    /// Vectors in Envoy shared data, searched by brute force.
    Local,
    Chroma,
}

/// How `threshold` compares: `gt`/`gte` take it as a cosine similarity, `lt`/`lte` as a cosine
/// distance (1 - similarity), the way Higress configs write it for distance-based stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Relation {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub strategy: Strategy,
    pub scope: Scope,
    pub consumer_header: String,
    /// Requests with a higher `temperature` are neither answered from nor stored in the cache.
    pub max_temperature: Option<f64>,
    /// Larger request bodies pass through uncached.
    pub max_request_bytes: usize,
    /// Longer answers (content bytes) are not stored.
    pub max_answer_bytes: usize,
    /// Characters per content chunk when a hit is replayed as a stream.
    pub replay_chunk_chars: usize,
    /// Metric series (label combinations) per worker; samples of further ones are dropped.
    pub max_metric_series: usize,
    pub cache: Cache,
    pub semantic: Option<Semantic>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// The Envoy cluster.
    pub cluster: String,
    /// `:authority` of the calls.
    pub host: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cache {
    pub kind: CacheType,
    /// Set for `redis`.
    pub service: Option<Service>,
    /// Seconds an answer stays; 0 keeps it until evicted.
    pub ttl_seconds: u64,
    pub key_prefix: String,
    /// Local store bounds.
    pub max_entries: usize,
    pub max_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Semantic {
    pub embedding: Embedding,
    pub vector: Vector,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub kind: EmbeddingType,
    pub service: Service,
    pub path: String,
    pub model: String,
    pub api_key: Option<String>,
    pub dimensions: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vector {
    pub kind: VectorType,
    /// Set for `chroma`.
    pub service: Option<Service>,
    pub collection_id: String,
    pub tenant: String,
    pub database: String,
    pub api_key: Option<String>,
    /// Smallest cosine similarity that counts as the same question.
    pub min_similarity: f32,
    /// Local store bound.
    pub max_entries: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    #[serde(default = "default_strategy")]
    cache_key_strategy: Strategy,
    #[serde(default = "default_scope")]
    scope: Scope,
    #[serde(default = "default_consumer_header")]
    consumer_header: String,
    #[serde(default)]
    max_temperature: Option<f64>,
    #[serde(default = "default_max_request_bytes")]
    max_request_bytes: usize,
    #[serde(default = "default_max_answer_bytes")]
    max_answer_bytes: usize,
    #[serde(default = "default_replay_chunk_chars")]
    replay_chunk_chars: usize,
    #[serde(default = "default_max_metric_series")]
    max_metric_series: usize,
    #[serde(default)]
    enable_semantic_cache: Option<bool>,
    #[serde(default)]
    cache: Option<Map<String, Value>>,
    #[serde(default)]
    embedding: Option<Map<String, Value>>,
    #[serde(default)]
    vector: Option<Map<String, Value>>,
    #[serde(default, rename = "cacheTTL")]
    cache_ttl: Option<u64>,
    #[serde(default)]
    cache_key_prefix: Option<String>,
}

/// The service keys every section shares. Parsed apart from the rest of a section, because
/// serde cannot refuse unknown keys in a struct that includes another.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawService {
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    service_host: Option<String>,
    /// Higress names a service by name and port; here the cluster already has its port.
    #[serde(default)]
    #[allow(dead_code)]
    service_port: Option<u16>,
    #[serde(default)]
    timeout: Option<u64>,
}

const SERVICE_KEYS: [&str; 4] = ["serviceName", "serviceHost", "servicePort", "timeout"];

/// Parses the section `name`: its service keys, and the rest as `T`; errors name the path.
fn section<T: serde::de::DeserializeOwned>(
    name: &str,
    map: &Map<String, Value>,
) -> Result<(T, RawService), ConfigError> {
    let (service, rest): (Map<String, Value>, Map<String, Value>) = map
        .clone()
        .into_iter()
        .partition(|(k, _)| SERVICE_KEYS.contains(&k.as_str()));
    let service = parse_object(&service).map_err(|e| e.under(name))?;
    let typed = parse_object(&rest).map_err(|e| e.under(name))?;
    Ok((typed, service))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCache {
    #[serde(rename = "type")]
    kind: CacheType,
    #[serde(default, rename = "cacheTTL")]
    cache_ttl: Option<u64>,
    #[serde(default)]
    cache_key_prefix: Option<String>,
    #[serde(default = "default_cache_entries")]
    max_entries: usize,
    #[serde(default = "default_cache_bytes")]
    max_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEmbedding {
    #[serde(rename = "type")]
    kind: EmbeddingType,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawVector {
    #[serde(rename = "type")]
    kind: VectorType,
    #[serde(default, rename = "collectionID")]
    collection_id: Option<String>,
    #[serde(default = "default_tenant")]
    tenant: String,
    #[serde(default = "default_database")]
    database: String,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default = "default_threshold")]
    threshold: f32,
    #[serde(default = "default_relation")]
    threshold_relation: Relation,
    /// Higress's number of neighbours; the nearest one decides here.
    #[serde(default)]
    #[allow(dead_code)]
    top_k: Option<u32>,
    #[serde(default = "default_vector_entries")]
    max_entries: usize,
}

fn default_strategy() -> Strategy {
    Strategy::FullRequest
}
fn default_scope() -> Scope {
    Scope::Consumer
}
fn default_consumer_header() -> String {
    "x-mse-consumer".into()
}
fn default_max_request_bytes() -> usize {
    1 << 20
}
fn default_max_answer_bytes() -> usize {
    64 << 10
}
fn default_replay_chunk_chars() -> usize {
    24
}
/// Metric series per worker when `maxMetricSeries` is not set.
pub const DEFAULT_MAX_METRIC_SERIES: usize = 10_000;

fn default_max_metric_series() -> usize {
    DEFAULT_MAX_METRIC_SERIES
}
fn default_ttl() -> u64 {
    3600
}
fn default_prefix() -> String {
    "ai-cache:".into()
}
fn default_cache_entries() -> usize {
    4096
}
fn default_cache_bytes() -> usize {
    128 << 20
}
fn default_tenant() -> String {
    "default_tenant".into()
}
fn default_database() -> String {
    "default_database".into()
}
fn default_threshold() -> f32 {
    0.95
}
fn default_relation() -> Relation {
    Relation::Gte
}
fn default_vector_entries() -> usize {
    1024
}

const DEFAULT_CACHE_TIMEOUT_MS: u64 = 500;
const DEFAULT_EMBEDDING_TIMEOUT_MS: u64 = 2000;
const DEFAULT_VECTOR_TIMEOUT_MS: u64 = 1000;

impl RawService {
    fn resolve(&self, what: &str, default_timeout_ms: u64) -> Result<Service, ConfigError> {
        let cluster = self
            .service_name
            .clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    format!("{what}.serviceName"),
                    "required (the Envoy cluster)",
                )
            })?;
        let timeout = self.timeout.unwrap_or(default_timeout_ms);
        if timeout == 0 {
            return Err(ConfigError::new(
                format!("{what}.timeout"),
                "must be at least 1 ms",
            ));
        }
        Ok(Service {
            host: self.service_host.clone().unwrap_or_else(|| cluster.clone()),
            cluster,
            timeout: Duration::from_millis(timeout),
        })
    }
}

impl Config {
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, ConfigError> {
        let raw: Raw = parse_object(map)?;
        if raw.consumer_header.trim().is_empty() {
            return Err(ConfigError::new("consumerHeader", "must not be empty"));
        }
        if raw.replay_chunk_chars == 0 {
            return Err(ConfigError::new("replayChunkChars", "must be at least 1"));
        }
        let cache = match raw.cache {
            None => Cache {
                kind: CacheType::Local,
                service: None,
                ttl_seconds: raw.cache_ttl.unwrap_or_else(default_ttl),
                key_prefix: raw.cache_key_prefix.unwrap_or_else(default_prefix),
                max_entries: default_cache_entries(),
                max_bytes: default_cache_bytes(),
            },
            Some(map) => {
                let (c, service): (RawCache, _) = section("cache", &map)?;
                let service = match c.kind {
                    CacheType::Redis => Some(service.resolve("cache", DEFAULT_CACHE_TIMEOUT_MS)?),
                    CacheType::Local => None,
                };
                if c.max_entries == 0 || c.max_bytes < c.max_entries {
                    return Err(ConfigError::new(
                        "cache.maxBytes",
                        "must be at least cache.maxEntries, and maxEntries at least 1",
                    ));
                }
                Cache {
                    kind: c.kind,
                    service,
                    ttl_seconds: c.cache_ttl.or(raw.cache_ttl).unwrap_or_else(default_ttl),
                    key_prefix: c
                        .cache_key_prefix
                        .or(raw.cache_key_prefix)
                        .unwrap_or_else(default_prefix),
                    max_entries: c.max_entries,
                    max_bytes: c.max_bytes,
                }
            }
        };
        let semantic_wanted = raw.enable_semantic_cache.unwrap_or(raw.vector.is_some());
        let semantic = if semantic_wanted {
            let embedding = raw
                .embedding
                .ok_or_else(|| ConfigError::new("embedding", "required for the semantic cache"))?;
            let (embedding, service): (RawEmbedding, _) = section("embedding", &embedding)?;
            let vector = match raw.vector {
                Some(map) => Some(section::<RawVector>("vector", &map)?),
                None => None,
            };
            Some(Semantic {
                embedding: embedding.resolve(service)?,
                vector: resolve_vector(vector)?,
            })
        } else {
            None
        };
        Ok(Config {
            strategy: raw.cache_key_strategy,
            scope: raw.scope,
            consumer_header: raw.consumer_header.to_ascii_lowercase(),
            max_temperature: raw.max_temperature,
            max_request_bytes: raw.max_request_bytes,
            max_answer_bytes: raw.max_answer_bytes,
            replay_chunk_chars: raw.replay_chunk_chars,
            max_metric_series: raw.max_metric_series,
            cache,
            semantic,
        })
    }

    /// The largest answer the local store keeps: its byte budget shared evenly by its entries,
    /// so that the budget holds without any bookkeeping across workers.
    pub fn local_entry_bytes(&self) -> usize {
        self.cache.max_bytes / self.cache.max_entries
    }
}

impl RawEmbedding {
    fn resolve(self, service: RawService) -> Result<Embedding, ConfigError> {
        let service = service.resolve("embedding", DEFAULT_EMBEDDING_TIMEOUT_MS)?;
        let model = self.model.unwrap_or_else(|| {
            match self.kind {
                EmbeddingType::Openai => "text-embedding-3-small",
                EmbeddingType::Azure => "text-embedding-ada-002",
                EmbeddingType::Dashscope => "text-embedding-v2",
                EmbeddingType::Ollama => "nomic-embed-text",
                EmbeddingType::Cohere => "embed-english-v3.0",
            }
            .to_string()
        });
        let path = match (self.path, self.kind) {
            (Some(path), _) => path,
            (None, EmbeddingType::Openai) => "/v1/embeddings".into(),
            (None, EmbeddingType::Azure) => {
                let version = self.api_version.ok_or_else(|| {
                    ConfigError::new("embedding.apiVersion", "required for azure")
                })?;
                format!("/openai/deployments/{model}/embeddings?api-version={version}")
            }
            (None, EmbeddingType::Dashscope) => {
                "/api/v1/services/embeddings/text-embedding/text-embedding".into()
            }
            (None, EmbeddingType::Ollama) => "/api/embed".into(),
            (None, EmbeddingType::Cohere) => "/v2/embed".into(),
        };
        if !path.starts_with('/') {
            return Err(ConfigError::new("embedding.path", "must start with '/'"));
        }
        Ok(Embedding {
            kind: self.kind,
            service,
            path,
            model,
            api_key: self.api_key.filter(|k| !k.is_empty()),
            dimensions: self.dimensions,
        })
    }
}

fn resolve_vector(raw: Option<(RawVector, RawService)>) -> Result<Vector, ConfigError> {
    let Some((raw, service)) = raw else {
        return Ok(Vector {
            kind: VectorType::Local,
            service: None,
            collection_id: String::new(),
            tenant: default_tenant(),
            database: default_database(),
            api_key: None,
            min_similarity: default_threshold(),
            max_entries: default_vector_entries(),
        });
    };
    let (service, collection_id) = match raw.kind {
        VectorType::Local => (None, String::new()),
        VectorType::Chroma => {
            let id = raw
                .collection_id
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    ConfigError::new(
                        "vector.collectionID",
                        "required for chroma (the collection's id, created with cosine space)",
                    )
                })?;
            if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(ConfigError::new("vector.collectionID", "must be a UUID"));
            }
            (
                Some(service.resolve("vector", DEFAULT_VECTOR_TIMEOUT_MS)?),
                id,
            )
        }
    };
    let min_similarity = match raw.threshold_relation {
        Relation::Gt | Relation::Gte => raw.threshold,
        Relation::Lt | Relation::Lte => 1.0 - raw.threshold,
    };
    if !(-1.0..=1.0).contains(&min_similarity) {
        return Err(ConfigError::new(
            "vector.threshold",
            "a cosine similarity (gt/gte) or distance (lt/lte) between 0 and 1",
        ));
    }
    if raw.max_entries == 0 {
        return Err(ConfigError::new("vector.maxEntries", "must be at least 1"));
    }
    Ok(Vector {
        kind: raw.kind,
        service,
        collection_id,
        tenant: raw.tenant,
        database: raw.database,
        api_key: raw.api_key.filter(|k| !k.is_empty()),
        min_similarity,
        max_entries: raw.max_entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Config, ConfigError> {
        Config::from_map(v.as_object().unwrap())
    }

    #[test]
    fn defaults_are_a_local_exact_cache() {
        let c = parse(json!({})).unwrap();
        assert_eq!(c.strategy, Strategy::FullRequest);
        assert_eq!(c.scope, Scope::Consumer);
        assert_eq!(c.max_metric_series, 10_000);
        assert_eq!(c.cache.kind, CacheType::Local);
        assert_eq!(c.cache.ttl_seconds, 3600);
        assert!(c.semantic.is_none());
        assert_eq!(c.local_entry_bytes(), 32 << 10);
    }

    #[test]
    fn unknown_and_mistyped_keys_name_their_path() {
        let err = parse(json!({"cacheKeyStrategie": "x"})).unwrap_err();
        assert!(err.to_string().contains("cacheKeyStrategie"), "{err}");
        let err = parse(json!({"cache": {"type": "redis", "cacheTTL": "long"}})).unwrap_err();
        assert!(err.to_string().contains("cacheTTL"), "{err}");
        let err = parse(json!({"cache": {"type": "redis"}})).unwrap_err();
        assert_eq!(err.path, "cache.serviceName");
        let err = parse(json!({"cache": {"type": "local", "maxEntrys": 5}})).unwrap_err();
        assert!(err.to_string().starts_with("cache.maxEntrys"), "{err}");
        let err = parse(json!({"cache": {"type": "redis", "serviceName": "r", "timeout": "1s"}}))
            .unwrap_err();
        assert!(err.to_string().starts_with("cache.timeout"), "{err}");
        let err = parse(json!({"cache": "redis"})).unwrap_err();
        assert!(err.to_string().starts_with("cache"), "{err}");
        let err = parse(json!({"cacheKeyStrategy": "firstQuestion"})).unwrap_err();
        assert!(err.to_string().contains("cacheKeyStrategy"), "{err}");
    }

    #[test]
    fn higress_top_level_ttl_and_prefix_set_the_cache_ones() {
        let c = parse(json!({"cacheTTL": 60, "cacheKeyPrefix": "higress-ai-cache:"})).unwrap();
        assert_eq!(
            (c.cache.ttl_seconds, c.cache.key_prefix.as_str()),
            (60, "higress-ai-cache:")
        );
        let c = parse(json!({
            "cacheTTL": 60, "cacheKeyPrefix": "higress-ai-cache:",
            "cache": {"type": "redis", "serviceName": "redis", "cacheTTL": 5}
        }))
        .unwrap();
        assert_eq!(
            (c.cache.ttl_seconds, c.cache.key_prefix.as_str()),
            (5, "higress-ai-cache:")
        );
        let err = parse(json!({"cacheTTL": 60, "cacheTtl": 60})).unwrap_err();
        assert_eq!(err.path, "cacheTtl");
    }

    #[test]
    fn semantic_cache_needs_an_embedding_service() {
        let err = parse(json!({"enableSemanticCache": true})).unwrap_err();
        assert_eq!(err.path, "embedding");
        let c = parse(json!({
            "embedding": {"type": "openai", "serviceName": "embed", "apiKey": "k"},
            "vector": {"type": "chroma", "serviceName": "chroma", "collectionID": "1344926e-fcd2-4a4a-a8ad-a2153dc7cf3e", "threshold": 0.1, "thresholdRelation": "lt"}
        }))
        .unwrap();
        let s = c.semantic.unwrap();
        assert_eq!(s.embedding.path, "/v1/embeddings");
        assert_eq!(s.embedding.service.host, "embed");
        assert!((s.vector.min_similarity - 0.9).abs() < 1e-6);
    }

    #[test]
    fn azure_path_names_the_deployment_and_version() {
        let c = parse(json!({"enableSemanticCache": true, "embedding": {
            "type": "azure", "serviceName": "az", "model": "emb", "apiVersion": "2024-10-21"}}))
        .unwrap();
        assert_eq!(
            c.semantic.unwrap().embedding.path,
            "/openai/deployments/emb/embeddings?api-version=2024-10-21"
        );
        let err = parse(json!({"enableSemanticCache": true, "embedding": {"type": "azure", "serviceName": "az"}}))
            .unwrap_err();
        assert_eq!(err.path, "embedding.apiVersion");
    }
}
