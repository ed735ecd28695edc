//! tests/clients/go/matrix.go — the client matrix (tests/tests/kafka_client_matrix.rs) driven
// with sarama, the Go Kafka client Debian packages (golang-github-shopify-sarama-dev 1.22):
// produce with every codec and read back, a group member, commit, seek to committed, resume.
// Built offline by scripts/install-kafka-clients.sh in GOPATH mode against /usr/share/gocode.
//
// Usage: sarama-matrix MODE BOOTSTRAP TOPIC GROUP ARG; prints JSON lines on stdout (the
// format every matrix client shares, see tests/clients/README.md).
package main

import (
	"context"
	"errors"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Shopify/sarama"
)

var out = json.NewEncoder(os.Stdout)
var outLock sync.Mutex

// emit prints one JSON line; stdout is shared by the consumer goroutines.
func emit(fields map[string]interface{}) {
	outLock.Lock()
	defer outLock.Unlock()
	_ = out.Encode(fields)
}

func fail(err error) {
	emit(map[string]interface{}{"event": "error", "error": err.Error()})
	os.Exit(1)
}

// config is shared by every mode: Kafka 2.1 protocol versions (the newest sarama 1.22 knows,
// needed for zstd), a 6 s group session (Kafka's group.min.session.timeout.ms), and a
// non-zero offset retention so OffsetCommit is sent as v2 (sarama sends v1 without one).
func config() *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = "sarama-matrix"
	c.Version = sarama.V2_1_0_0
	c.Metadata.Retry.Max = 10
	c.Metadata.Retry.Backoff = 500 * time.Millisecond
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Producer.Retry.Max = 10
	c.Producer.Flush.Frequency = 10 * time.Millisecond
	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.CommitInterval = 500 * time.Millisecond
	c.Consumer.Offsets.Retention = 24 * time.Hour
	c.Consumer.Group.Session.Timeout = 6 * time.Second
	c.Consumer.Group.Heartbeat.Interval = time.Second
	c.Consumer.Group.Rebalance.Strategy = sarama.BalanceStrategyRange
	c.Consumer.Group.Rebalance.Timeout = 20 * time.Second
	return c
}

var codecs = []struct {
	name  string
	codec sarama.CompressionCodec
}{
	{"none", sarama.CompressionNone},
	{"gzip", sarama.CompressionGZIP},
	{"snappy", sarama.CompressionSnappy},
	{"lz4", sarama.CompressionLZ4},
	{"zstd", sarama.CompressionZSTD},
}

// value is "<codec>-<i>-" and 128 compressible bytes: a client may send a batch uncompressed
// when the codec would not make it smaller, so tiny values would test nothing.
func value(codec string, i int) string {
	return fmt.Sprintf("%s-%d-%s", codec, i, strings.Repeat("abcdefgh", 16))
}

func step(name string, err error) {
	if err != nil {
		emit(map[string]interface{}{"step": name, "ok": false, "error": err.Error()})
	} else {
		emit(map[string]interface{}{"step": name, "ok": true})
	}
}

// produceAll sends n values value(codec, i) with acks=all to TOPIC-<codec>, one codec at a
// time, then reads each topic back from its first offset and compares.
func produceAll(bootstrap []string, prefix string, n int) {
	for _, c := range codecs {
		topic := prefix + "-" + c.name
		err := produceCodec(bootstrap, topic, c.codec, c.name, n)
		if c.codec == sarama.CompressionZSTD && errors.Is(err, sarama.ErrUnsupportedCompressionType) {
			// sarama 1.22 (the one Debian packages) puts zstd batches in Produce v3; Kafka
			// accepts zstd only from Produce v7 (KIP-110) and answers
			// UNSUPPORTED_COMPRESSION_TYPE, as insync does. sarama 1.23+ sends v7. The step
			// cannot be done with this client: said, not counted as a pass or a failure.
			na := "sarama 1.22 sends zstd in Produce v3; Kafka and insync refuse it (UNSUPPORTED_COMPRESSION_TYPE, KIP-110: v7+)"
			emit(map[string]interface{}{"step": "produce-zstd", "ok": false, "na": na})
			emit(map[string]interface{}{"step": "consume-zstd", "ok": false, "na": "nothing to read: produce was refused"})
			continue
		}
		step("produce-"+c.name, err)
		if err != nil {
			step("consume-"+c.name, fmt.Errorf("not read: produce failed"))
		} else {
			step("consume-"+c.name, readBack(bootstrap, topic, c.name, n))
		}
	}
}

func produceCodec(bootstrap []string, topic string, codec sarama.CompressionCodec, name string, n int) error {
	cfg := config()
	cfg.Producer.Compression = codec
	producer, err := sarama.NewSyncProducer(bootstrap, cfg)
	if err != nil {
		return err
	}
	defer producer.Close()
	msgs := make([]*sarama.ProducerMessage, 0, n)
	for i := 0; i < n; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Partition: 0, Value: sarama.StringEncoder(value(name, i))})
	}
	err = producer.SendMessages(msgs)
	if errs, ok := err.(sarama.ProducerErrors); ok && len(errs) > 0 {
		// The broker's answer, not just "failed to deliver N messages".
		return fmt.Errorf("%d of %d failed, first: %w", len(errs), n, errs[0].Err)
	}
	return err
}

func readBack(bootstrap []string, topic, name string, n int) error {
	consumer, err := sarama.NewConsumer(bootstrap, config())
	if err != nil {
		return err
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(topic, 0, sarama.OffsetOldest)
	if err != nil {
		return err
	}
	defer pc.Close()
	deadline := time.After(20 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case m := <-pc.Messages():
			if want := value(name, i); string(m.Value) != want || m.Offset != int64(i) {
				return fmt.Errorf("offset %d value %q, want offset %d value %q", m.Offset, m.Value, i, want)
			}
		case e := <-pc.Errors():
			return e
		case <-deadline:
			return fmt.Errorf("read %d of %d records in 20s", i, n)
		}
	}
	return nil
}

// member is one consumer of a group: prints each assignment and each record, marks every
// record (committed every 500 ms), and runs until killed or its lifetime ends.
type member struct {
	name string
	// stopAt, if set, ends the member after it has seen that offset of partition 0 and
	// marked stopAt+1 (the commit mode).
	stopAt int64
	done   chan struct{}
	once   sync.Once
}

func (m *member) Setup(s sarama.ConsumerGroupSession) error {
	parts := []int32{}
	for _, ps := range s.Claims() {
		parts = append(parts, ps...)
	}
	emit(map[string]interface{}{"event": "assigned", "member": m.name, "partitions": parts, "generation": s.GenerationID()})
	return nil
}

func (m *member) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (m *member) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	emit(map[string]interface{}{"event": "start", "member": m.name, "partition": claim.Partition(), "offset": claim.InitialOffset()})
	for msg := range claim.Messages() {
		emit(map[string]interface{}{"event": "record", "member": m.name, "partition": msg.Partition, "offset": msg.Offset, "value": string(msg.Value)})
		if m.stopAt >= 0 && msg.Partition == 0 && msg.Offset >= m.stopAt-1 {
			s.MarkOffset(msg.Topic, 0, m.stopAt, "")
			m.once.Do(func() { close(m.done) })
			return nil
		}
		if m.stopAt < 0 {
			s.MarkMessage(msg, "")
		}
	}
	return nil
}

// runGroup consumes TOPIC in GROUP until the member is done, a signal, or the lifetime.
func runGroup(bootstrap []string, topic, group string, m *member, lifetime time.Duration) {
	client, err := sarama.NewClient(bootstrap, config())
	if err != nil {
		fail(err)
	}
	defer client.Close()
	if b, err := client.Coordinator(group); err == nil {
		emit(map[string]interface{}{"event": "coordinator", "id": b.ID()})
	}
	cg, err := sarama.NewConsumerGroupFromClient(group, client)
	if err != nil {
		fail(err)
	}
	go func() {
		for e := range cg.Errors() {
			emit(map[string]interface{}{"event": "warning", "member": m.name, "error": e.Error()})
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), lifetime)
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case <-m.done:
		case <-sigs:
		case <-ctx.Done():
		}
		cancel()
	}()
	for ctx.Err() == nil {
		if err := cg.Consume(ctx, []string{topic}, m); err != nil && ctx.Err() == nil {
			emit(map[string]interface{}{"event": "warning", "member": m.name, "error": err.Error()})
			time.Sleep(500 * time.Millisecond)
		}
	}
	// Close flushes the marked offsets to the coordinator (sarama 1.22 has no explicit
	// commit call): a commit that fails is reported on cg.Errors() above.
	if err := cg.Close(); err != nil {
		fail(err)
	}
}

// seek reads the group's committed offset of partition 0 (OffsetFetch through an offset
// manager), seeks a plain partition consumer there and reads n records on.
func seek(bootstrap []string, topic, group string, n int) {
	client, err := sarama.NewClient(bootstrap, config())
	if err != nil {
		fail(err)
	}
	defer client.Close()
	om, err := sarama.NewOffsetManagerFromClient(group, client)
	if err != nil {
		fail(err)
	}
	pom, err := om.ManagePartition(topic, 0)
	if err != nil {
		fail(err)
	}
	committed, _ := pom.NextOffset()
	pom.AsyncClose()
	_ = om.Close()
	emit(map[string]interface{}{"event": "committed", "partition": 0, "offset": committed})
	if committed < 0 {
		fail(fmt.Errorf("no committed offset for %s/0 in group %s", topic, group))
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		fail(err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(topic, 0, committed)
	if err != nil {
		fail(err)
	}
	defer pc.Close()
	deadline := time.After(20 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case msg := <-pc.Messages():
			emit(map[string]interface{}{"event": "record", "member": "seek", "partition": msg.Partition, "offset": msg.Offset, "value": string(msg.Value)})
		case e := <-pc.Errors():
			fail(e)
		case <-deadline:
			fail(fmt.Errorf("read %d of %d records in 20s", i, n))
		}
	}
}

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: sarama-matrix produce|member|commit|seek|resume BOOTSTRAP TOPIC GROUP ARG")
		os.Exit(2)
	}
	mode, bootstrap, topic, group, arg := os.Args[1], strings.Split(os.Args[2], ","), os.Args[3], os.Args[4], os.Args[5]
	n, _ := strconv.Atoi(arg)
	switch mode {
	case "produce":
		produceAll(bootstrap, topic, n)
	case "member":
		runGroup(bootstrap, topic, group, &member{name: arg, stopAt: -1, done: make(chan struct{})}, 150*time.Second)
	case "commit":
		runGroup(bootstrap, topic, group, &member{name: "commit", stopAt: int64(n), done: make(chan struct{})}, 60*time.Second)
		emit(map[string]interface{}{"event": "committed", "partition": 0, "offset": n})
	case "seek":
		seek(bootstrap, topic, group, n)
	case "resume":
		// Read in the group up to offset ARG-1; the "start" line shows where it resumed.
		runGroup(bootstrap, topic, group, &member{name: "resume", stopAt: int64(n), done: make(chan struct{})}, 60*time.Second)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		os.Exit(2)
	}
	emit(map[string]interface{}{"event": "done"})
}
