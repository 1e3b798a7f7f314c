// A foreign producer: Kafka's own Java client, one producer per compression codec.
// Run as a single-file program (java -cp '<kafka libs>/*' ForeignProducer.java BOOTSTRAP
// TOPIC); reads records from stdin, one a line, tab-separated and base64-encoded:
//   codec  key  value  [header-name:header-value ...]
// (codec is gzip, snappy, lz4, zstd or none). Prints "sent <codec> <partition> <offset>"
// per record once acknowledged, and exits non-zero on any failure.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class ForeignProducer {
    public static void main(String[] args) throws Exception {
        Base64.Decoder b64 = Base64.getDecoder();
        Map<String, List<ProducerRecord<byte[], byte[]>>> byCodec = new LinkedHashMap<>();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            if (line.isBlank()) continue;
            String[] parts = line.split("\t", -1);
            ProducerRecord<byte[], byte[]> record =
                new ProducerRecord<>(args[1], null, b64.decode(parts[1]), b64.decode(parts[2]));
            for (int i = 3; i < parts.length; i++) {
                String[] header = parts[i].split(":", 2);
                record.headers().add(new RecordHeader(
                    new String(b64.decode(header[0]), StandardCharsets.UTF_8), b64.decode(header[1])));
            }
            byCodec.computeIfAbsent(parts[0], c -> new ArrayList<>()).add(record);
        }
        for (Map.Entry<String, List<ProducerRecord<byte[], byte[]>>> entry : byCodec.entrySet()) {
            Properties props = new Properties();
            props.put("bootstrap.servers", args[0]);
            props.put("compression.type", entry.getKey());
            props.put("acks", "all");
            // One batch per codec: every record of it compressed together.
            props.put("linger.ms", "50");
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(
                    props, new ByteArraySerializer(), new ByteArraySerializer())) {
                List<java.util.concurrent.Future<RecordMetadata>> sent = new ArrayList<>();
                for (ProducerRecord<byte[], byte[]> record : entry.getValue()) sent.add(producer.send(record));
                producer.flush();
                for (java.util.concurrent.Future<RecordMetadata> future : sent) {
                    RecordMetadata meta = future.get();
                    System.out.println("sent " + entry.getKey() + " " + meta.partition() + " " + meta.offset());
                }
            }
        }
    }
}
