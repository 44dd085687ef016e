// The official Node.js Event Hubs consumer (@azure/event-hubs, AMQP over TLS on 5671 with the
// `eventHubConnectionString` of hub.json) reads the telemetry the official Node.js device SDK sent,
// as a backend reads IoT Hub's built-in endpoint: in order, with IoT Hub's annotations and
// properties, from the earliest event and from a sequence number. run.sh starts the emulator and
// sets NODE_EXTRA_CA_CERTS and IRONHUB_HUB_JSON.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');

const { EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Registry } = require('azure-iothub');

const hub = JSON.parse(fs.readFileSync(process.env.IRONHUB_HUB_JSON, 'utf8'));
const ca = fs.readFileSync(hub.caFile, 'utf8');
const registry = Registry.fromConnectionString(hub.serviceConnectionString);
const run = `eh${process.pid}`;

async function sendTelemetry(deviceId, count) {
  const { responseBody } = await registry.create({ deviceId, status: 'enabled' });
  const key = responseBody.authentication.symmetricKey.primaryKey;
  const client = DeviceClient.fromConnectionString(`HostName=${hub.hostname};DeviceId=${deviceId};SharedAccessKey=${key}`, Mqtt);
  client.setOptions({ ca });
  await client.open();
  for (let i = 0; i < count; i++) {
    const m = new Message(JSON.stringify({ n: i }));
    m.messageId = `${deviceId}-${i}`;
    m.correlationId = `corr-${i}`;
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    m.properties.add('n', String(i));
    await client.sendEvent(m);
  }
  await client.close();
}

/** Subscribes until `count` events of `deviceId` arrived; resolves to them in arrival order. */
async function receive(consumer, deviceId, count, options) {
  const got = [];
  let subscription;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`received ${got.length} of ${count} events`)), 45000);
    subscription = consumer.subscribe(
      {
        processEvents: async (events, context) => {
          for (const e of events) {
            if (e.systemProperties['iothub-connection-device-id'] === deviceId) got.push({ partition: context.partitionId, e });
          }
          if (got.length >= count) { clearTimeout(timer); resolve(); }
        },
        processError: async (err) => { clearTimeout(timer); reject(err); },
      },
      { maxWaitTimeInSeconds: 1, ...options });
  }).finally(() => subscription && subscription.close());
  return got;
}

test('@azure/event-hubs reads device telemetry in order with every property', async () => {
  const deviceId = `${run}-order`;
  await sendTelemetry(deviceId, 4);
  const consumer = new EventHubConsumerClient('$Default', hub.eventHubConnectionString);
  try {
    const ids = await consumer.getPartitionIds();
    assert.deepEqual(ids, ['0', '1', '2', '3']);
    const got = await receive(consumer, deviceId, 4, { startPosition: earliestEventPosition });
    assert.equal(new Set(got.map((g) => g.partition)).size, 1, 'one device, one partition');
    got.forEach(({ e }, i) => {
      assert.equal(e.properties.n, String(i));
      assert.equal(e.messageId, `${deviceId}-${i}`);
      assert.equal(e.correlationId, `corr-${i}`);
      assert.equal(e.contentType, 'application/json');
      assert.equal(e.systemProperties['iothub-message-source'], 'Telemetry');
      assert.ok(e.systemProperties['iothub-enqueuedtime']);
      assert.ok(e.enqueuedTimeUtc instanceof Date);
      const body = Buffer.isBuffer(e.body) ? JSON.parse(e.body.toString('utf8')) : e.body;
      assert.deepEqual(body, { n: i });
    });
    const seqs = got.map(({ e }) => e.sequenceNumber);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));

    // From a sequence number: the events after the second one, on its partition.
    const partition = got[0].partition;
    const after = await receive(consumer, deviceId, 2, {
      startPosition: { [partition]: { sequenceNumber: got[1].e.sequenceNumber } },
    });
    assert.deepEqual(after.map(({ e }) => e.properties.n), ['2', '3']);
    const info = await consumer.getPartitionProperties(partition);
    assert.ok(info.lastEnqueuedSequenceNumber >= got[3].e.sequenceNumber);
  } finally {
    await consumer.close();
  }
});
