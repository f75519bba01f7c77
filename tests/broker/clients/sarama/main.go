// A Sarama 1.22 (2019) client run against strom by test_sarama.py.
//
// Usage: sarama-check BOOTSTRAP KAFKA_VERSION TOPIC GROUP COMPRESSION
//
// It produces messages with a SyncProducer, reads them back with a partition consumer, commits
// an offset through an OffsetManager and reads it back with a new one; from Kafka 0.10.2 on it
// also consumes the topic in a consumer group that marks every message (committed on close).
// Each step prints one line "step value"; any failure exits non-zero with the error.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/Shopify/sarama"
)

const count = 20

func fail(step string, err error) {
	fmt.Printf("FAIL %s: %v\n", step, err)
	os.Exit(1)
}

type handler struct {
	seen chan string
}

func (handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h handler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		sess.MarkMessage(msg, "")
		h.seen <- string(msg.Value)
	}
	return nil
}

func main() {
	bootstrap, versionText, topic, group, compression := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	version, err := sarama.ParseKafkaVersion(versionText)
	if err != nil {
		fail("version", err)
	}
	conf := sarama.NewConfig()
	conf.Version = version
	conf.ClientID = "sarama-1.22-check"
	conf.Producer.Return.Successes = true
	conf.Producer.RequiredAcks = sarama.WaitForAll
	conf.Consumer.Offsets.Initial = sarama.OffsetOldest
	conf.Consumer.Return.Errors = true
	conf.Metadata.Retry.Backoff = 100 * time.Millisecond
	switch compression {
	case "gzip":
		conf.Producer.Compression = sarama.CompressionGZIP
	case "snappy":
		conf.Producer.Compression = sarama.CompressionSnappy
	case "lz4":
		conf.Producer.Compression = sarama.CompressionLZ4
	}
	addrs := []string{bootstrap}

	client, err := sarama.NewClient(addrs, conf)
	if err != nil {
		fail("client", err)
	}
	defer client.Close()

	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		fail("producer", err)
	}
	var msgs []*sarama.ProducerMessage
	for i := 0; i < count; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{
			Topic: topic, Partition: 0,
			Key:   sarama.StringEncoder(fmt.Sprintf("k%d", i)),
			Value: sarama.StringEncoder(fmt.Sprintf("v%d", i)),
		})
	}
	if err := producer.SendMessages(msgs[:count/2]); err != nil {
		fail("produce batch", err)
	}
	for _, m := range msgs[count/2:] {
		if _, _, err := producer.SendMessage(m); err != nil {
			fail("produce", err)
		}
	}
	fmt.Printf("produced %d last_offset=%d\n", count, msgs[count-1].Offset)

	newest, err := client.GetOffset(topic, 0, sarama.OffsetNewest)
	if err != nil {
		fail("offset newest", err)
	}
	oldest, err := client.GetOffset(topic, 0, sarama.OffsetOldest)
	if err != nil {
		fail("offset oldest", err)
	}
	fmt.Printf("offsets %d %d\n", oldest, newest)

	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		fail("consumer", err)
	}
	pc, err := consumer.ConsumePartition(topic, 0, sarama.OffsetOldest)
	if err != nil {
		fail("consume partition", err)
	}
	var values []string
	for len(values) < count {
		select {
		case msg := <-pc.Messages():
			values = append(values, fmt.Sprintf("%d:%s=%s", msg.Offset, msg.Key, msg.Value))
		case cerr := <-pc.Errors():
			fail("consume", cerr)
		case <-time.After(20 * time.Second):
			fail("consume", fmt.Errorf("timed out after %d messages", len(values)))
		}
	}
	pc.Close()
	fmt.Printf("consumed %s\n", strings.Join(values, ","))

	om, err := sarama.NewOffsetManagerFromClient(group, client)
	if err != nil {
		fail("offset manager", err)
	}
	pom, err := om.ManagePartition(topic, 0)
	if err != nil {
		fail("manage partition", err)
	}
	pom.MarkOffset(7, "meta")
	pom.Close()
	om.Close()
	om2, err := sarama.NewOffsetManagerFromClient(group, client)
	if err != nil {
		fail("offset manager 2", err)
	}
	pom2, err := om2.ManagePartition(topic, 0)
	if err != nil {
		fail("manage partition 2", err)
	}
	next, meta := pom2.NextOffset()
	fmt.Printf("committed %d %s\n", next, meta)
	pom2.Close()
	om2.Close()

	if !version.IsAtLeast(sarama.V0_10_2_0) {
		fmt.Println("done")
		return
	}
	cg, err := sarama.NewConsumerGroupFromClient(group+"-cg", client)
	if err != nil {
		fail("consumer group", err)
	}
	h := handler{seen: make(chan string, count)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cg.Consume(ctx, []string{topic}, h) }()
	got := 0
	for got < count {
		select {
		case <-h.seen:
			got++
		case gerr := <-cg.Errors():
			fail("group", gerr)
		case cerr := <-done:
			fail("group consume", cerr)
		case <-time.After(30 * time.Second):
			fail("group", fmt.Errorf("timed out after %d messages", got))
		}
	}
	cancel()
	if err := <-done; err != nil {
		fail("group consume", err)
	}
	if err := cg.Close(); err != nil {
		fail("group close", err)
	}
	om3, err := sarama.NewOffsetManagerFromClient(group+"-cg", client)
	if err != nil {
		fail("offset manager 3", err)
	}
	pom3, err := om3.ManagePartition(topic, 0)
	if err != nil {
		fail("manage partition 3", err)
	}
	next, _ = pom3.NextOffset()
	fmt.Printf("group_committed %d\n", next)
	pom3.Close()
	om3.Close()
	fmt.Println("done")
}
