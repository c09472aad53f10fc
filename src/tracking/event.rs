//! The protobuf messages of a TensorBoard event file, as `prost` structs carrying only the fields relaxflow writes,
//! with the field numbers of tensorflow/core/util/event.proto, framework/summary.proto, tensor.proto and
//! tensor_shape.proto (unknown fields are skipped by every protobuf reader, so a subset is a valid message).
use prost::Message;

/// `Event`: wall_time = 1, step = 2, file_version = 3, summary = 5.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `Summary`: repeated Value value = 1.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

/// `Summary.Value`: tag = 1, simple_value = 2, image = 4, tensor = 8, metadata = 9.
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    #[prost(oneof = "Kind", tags = "2, 4, 8")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    #[prost(message, tag = "4")]
    Image(Image),
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// `Summary.Image`: height = 1, width = 2, colorspace = 3 (1 grey, 2 grey + alpha, 3 RGB, 4 RGBA),
/// encoded_image_string = 4 (a PNG file's bytes).
#[derive(Clone, PartialEq, Message)]
pub struct Image {
    #[prost(int32, tag = "1")]
    pub height: i32,
    #[prost(int32, tag = "2")]
    pub width: i32,
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// `SummaryMetadata`: plugin_data = 1.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `SummaryMetadata.PluginData`: plugin_name = 1, content = 2.
#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `TensorProto`: dtype = 1, tensor_shape = 2, string_val = 8.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `TensorShapeProto`: dim = 2 (none: a scalar).
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<Dim>,
}

/// `TensorShapeProto.Dim`: size = 1.
#[derive(Clone, PartialEq, Message)]
pub struct Dim {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// tensorflow's `DataType::DT_STRING`.
pub const DT_STRING: i32 = 7;

/// The first event of every file: `brain.Event:2` (the version TensorBoard expects).
pub fn file_version(wall_time: f64) -> Event {
    Event { wall_time, step: 0, what: Some(What::FileVersion("brain.Event:2".into())) }
}

fn summary(wall_time: f64, step: i64, value: Vec<Value>) -> Event {
    Event { wall_time, step, what: Some(What::Summary(Summary { value })) }
}

/// Scalars (`simple_value`, f32 as TensorBoard stores them) at one step.
pub fn scalars(wall_time: f64, step: i64, values: &[(String, f64)]) -> Event {
    let value = values.iter().map(|(tag, v)| Value { tag: tag.clone(), metadata: None, kind: Some(Kind::SimpleValue(*v as f32)) }).collect();
    summary(wall_time, step, value)
}

/// A PNG picture with its size and colour space.
pub fn image(wall_time: f64, step: i64, tag: &str, png: Image) -> Event {
    summary(wall_time, step, vec![Value { tag: tag.into(), metadata: None, kind: Some(Kind::Image(png)) }])
}

/// Markdown text for TensorBoard's text plugin: a scalar DT_STRING tensor with plugin_name "text".
pub fn text(wall_time: f64, step: i64, tag: &str, markdown: &str) -> Event {
    let tensor = TensorProto { dtype: DT_STRING, tensor_shape: Some(TensorShapeProto { dim: vec![] }), string_val: vec![markdown.as_bytes().to_vec()] };
    let metadata = SummaryMetadata { plugin_data: Some(PluginData { plugin_name: "text".into(), content: vec![] }) };
    summary(wall_time, step, vec![Value { tag: tag.into(), metadata: Some(metadata), kind: Some(Kind::Tensor(tensor)) }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scalar_event_has_the_bytes_protoc_would_write() {
        // Event{wall_time: 1.5, step: 3, summary{value{tag: "a", simple_value: 2.0}}}, encoded by hand:
        // field 1 double (0x09), field 2 varint (0x10), field 5 bytes (0x2a); inside, Value (0x0a) with tag (0x0a)
        // and simple_value float (0x15).
        let bytes = scalars(1.5, 3, &[("a".into(), 2.0)]).encode_to_vec();
        let mut want = vec![0x09];
        want.extend(1.5f64.to_le_bytes());
        want.extend([0x10, 3, 0x2a, 10, 0x0a, 8, 0x0a, 1, b'a', 0x15]);
        want.extend(2.0f32.to_le_bytes());
        assert_eq!(bytes, want);
        assert_eq!(Event::decode(bytes.as_slice()).unwrap().step, 3);
    }
}
