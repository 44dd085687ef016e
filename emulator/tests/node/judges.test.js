// The official Azure IoT Node.js SDKs (azure-iot-device + azure-iot-device-mqtt on the device side,
// azure-iothub on the service side), unchanged, against ironhub-emulator on 8883/443: the scenarios
// of the Python compat suite (tests/compat). run.sh starts the emulator and sets
// NODE_EXTRA_CA_CERTS (service side) and IRONHUB_HUB_JSON; device clients get the CA via setOptions.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const https = require('node:https');

const { Client: DeviceClient, ModuleClient, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Registry, Client: ServiceClient, AmqpWs } = require('azure-iothub');

const hub = JSON.parse(fs.readFileSync(process.env.IRONHUB_HUB_JSON, 'utf8'));
const ca = fs.readFileSync(hub.caFile, 'utf8');
const serviceCs = hub.serviceConnectionString;
const policyKey = /SharedAccessKey=([^;]+)/.exec(serviceCs)[1];
const registry = Registry.fromConnectionString(serviceCs);
const service = ServiceClient.fromConnectionString(serviceCs);
const run = `n${process.pid}`; // unique ids per run: the state dir may be reused

// ---- helpers (test side, independent of the SDKs under test) ----

function serviceToken() {
  const resource = encodeURIComponent(hub.hostname);
  const expiry = Math.floor(Date.now() / 1000) + 3600;
  const sig = crypto.createHmac('sha256', Buffer.from(policyKey, 'base64')).update(`${resource}\n${expiry}`).digest('base64');
  return `SharedAccessSignature sr=${resource}&sig=${encodeURIComponent(sig)}&se=${expiry}&skn=iothubowner`;
}

/** A control API call (`/emulator/...`) of the emulator; resolves to the parsed JSON body. */
function control(method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = https.request(
      { host: hub.hostname, port: hub.httpsPort, method, path, ca,
        headers: { Authorization: serviceToken(), 'Content-Type': 'application/json' } },
      (res) => {
        let text = '';
        res.on('data', (c) => { text += c; });
        res.on('end', () => (res.statusCode < 300 ? resolve(JSON.parse(text || 'null')) : reject(new Error(`${res.statusCode} ${text}`))));
      });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

async function newDevice(name) {
  const deviceId = `${run}-${name}`;
  const { responseBody } = await registry.create({ deviceId, status: 'enabled' });
  return { deviceId, key: responseBody.authentication.symmetricKey.primaryKey };
}

async function newModule(deviceId, moduleId) {
  await registry.addModule({ deviceId, moduleId });
  const { responseBody } = await registry.getModule(deviceId, moduleId);
  return responseBody.authentication.symmetricKey.primaryKey;
}

const opened = [];
async function open(client) {
  client.setOptions({ ca });
  await client.open();
  opened.push(client);
  return client;
}

function deviceClient(deviceId, key, transport = Mqtt) {
  return DeviceClient.fromConnectionString(`HostName=${hub.hostname};DeviceId=${deviceId};SharedAccessKey=${key}`, transport);
}

function moduleClient(deviceId, moduleId, key) {
  return ModuleClient.fromConnectionString(
    `HostName=${hub.hostname};DeviceId=${deviceId};ModuleId=${moduleId};SharedAccessKey=${key}`, Mqtt);
}

/** Resolves with the first event `emitter` emits named `name`, or rejects after `ms`. */
function once(emitter, name, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${name} within ${ms} ms`)), ms);
    emitter.once(name, (...args) => { clearTimeout(timer); resolve(args); });
  });
}

async function eventsOf(deviceId, moduleId) {
  const q = `deviceId=${encodeURIComponent(deviceId)}${moduleId ? `&moduleId=${moduleId}` : ''}&timeoutSeconds=10`;
  return (await control('GET', `/emulator/events?${q}`)).events;
}

test.after(async () => {
  for (const c of opened) await c.close().catch(() => {});
});

// ---- scenarios ----

test('registry: devices and modules are created, read and listed', async () => {
  const { deviceId, key } = await newDevice('reg');
  assert.ok(key.length > 20);
  const moduleKey = await newModule(deviceId, 'm1');
  assert.ok(moduleKey.length > 20);
  const { responseBody: device } = await registry.get(deviceId);
  assert.equal(device.deviceId, deviceId);
  assert.equal(device.connectionState, 'Disconnected');
  const { responseBody: all } = await registry.list();
  assert.ok(all.some((d) => d.deviceId === deviceId));
  await registry.delete(deviceId);
  // IoT Hub's current error body ({"Message": "{\"errorCode\":404001,...}"}) is one azure-iothub's
  // parser predates (azure-iot-sdk-node#971): it reports a plain 'Not found', as against the real hub.
  await assert.rejects(registry.get(deviceId), (e) => e.constructor.name === 'DeviceNotFoundError' || e.message === 'Not found');
});

test('telemetry keeps system and custom properties', async () => {
  const { deviceId, key } = await newDevice('tele');
  const client = await open(deviceClient(deviceId, key));
  const msg = new Message(JSON.stringify({ t: 21.5 }));
  msg.messageId = 'mid-1';
  msg.correlationId = 'cid-1';
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  msg.properties.add('k', 'v w');
  msg.properties.add('odd&key', 'a=b/c');
  await client.sendEvent(msg);
  const [event] = await eventsOf(deviceId);
  assert.equal(Buffer.from(event.body, 'base64').toString(), '{"t":21.5}');
  assert.deepEqual(event.properties, { k: 'v w', 'odd&key': 'a=b/c' });
  assert.equal(event.systemProperties.messageId, 'mid-1');
  assert.equal(event.systemProperties.correlationId, 'cid-1');
  assert.equal(event.systemProperties.contentType, 'application/json');
  assert.equal(event.systemProperties.contentEncoding, 'utf-8');
});

test('module output is routed to another module input with its properties', async () => {
  const { deviceId } = await newDevice('edge');
  const producerKey = await newModule(deviceId, 'producer');
  const consumerKey = await newModule(deviceId, 'consumer');
  await control('PUT', '/emulator/routes', { routes: {
    [`${run}-r`]: 'FROM /messages/modules/producer/outputs/out1 INTO BrokeredEndpoint("/modules/consumer/inputs/in1")',
  } });
  const consumer = await open(moduleClient(deviceId, 'consumer', consumerKey));
  const received = once(consumer, 'inputMessage');
  // The SDK subscribes to inputs when the first listener is added; give the SUBACK a moment.
  await new Promise((r) => setTimeout(r, 500));
  const producer = await open(moduleClient(deviceId, 'producer', producerKey));
  const msg = new Message('routed');
  msg.properties.add('k', 'v w');
  await producer.sendOutputEvent('out1', msg);
  const [inputName, got] = await received;
  assert.equal(inputName, 'in1');
  assert.equal(got.data.toString(), 'routed');
  assert.equal(got.properties.getValue('k'), 'v w');
  consumer.complete(got, () => {});
  const [event] = await eventsOf(deviceId, 'producer');
  assert.equal(event.outputName, 'out1', 'the trailing / of the topic is not part of the output name');
  assert.deepEqual(event.properties, { k: 'v w' });
  await control('PUT', '/emulator/routes', { routes: { [`${run}-r`]: null } });
});

test('direct methods to a device and to a module', async () => {
  const { deviceId, key } = await newDevice('meth');
  const moduleKey = await newModule(deviceId, 'mm');
  const device = await open(deviceClient(deviceId, key));
  device.onDeviceMethod('reboot', (request, response) => {
    response.send(200, { echoed: request.payload, by: 'device' });
  });
  const mod = await open(moduleClient(deviceId, 'mm', moduleKey));
  mod.onMethod('ping', (request, response) => response.send(201, { by: 'module' }));
  await new Promise((r) => setTimeout(r, 500));
  const { result } = await service.invokeDeviceMethod(deviceId, { methodName: 'reboot', payload: { delay: 5 }, responseTimeoutInSeconds: 10 });
  assert.equal(result.status, 200);
  assert.deepEqual(result.payload, { echoed: { delay: 5 }, by: 'device' });
  const { result: modResult } = await service.invokeDeviceMethod(deviceId, 'mm', { methodName: 'ping', payload: null, responseTimeoutInSeconds: 10 });
  assert.equal(modResult.status, 201);
  assert.deepEqual(modResult.payload, { by: 'module' });
  const offline = await newDevice('meth-off');
  await assert.rejects(
    service.invokeDeviceMethod(offline.deviceId, { methodName: 'x', responseTimeoutInSeconds: 5 }),
    (e) => e.constructor.name === 'DeviceNotFoundError' || /404/.test(String(e.responseBody || e.message)));
});

test('twins: desired patches reach the device, reported properties reach the service', async () => {
  const { deviceId, key } = await newDevice('twin');
  const client = await open(deviceClient(deviceId, key));
  const twin = await client.getTwin();
  const desired = new Promise((resolve) => {
    twin.on('properties.desired', (patch) => { if (patch.color) resolve(patch); });
  });
  const { responseBody: serviceTwin } = await registry.getTwin(deviceId);
  await registry.updateTwin(deviceId, { properties: { desired: { color: 'red' } } }, serviceTwin.etag);
  const patch = await Promise.race([desired, new Promise((_, rej) => setTimeout(() => rej(new Error('no desired patch')), 10000))]);
  assert.equal(patch.color, 'red');
  assert.ok(patch.$version >= 2);
  await new Promise((resolve, reject) => twin.properties.reported.update({ fw: '1.2.3', nested: { ok: true } }, (e) => (e ? reject(e) : resolve())));
  const { responseBody: after } = await registry.getTwin(deviceId);
  assert.equal(after.properties.reported.fw, '1.2.3');
  assert.deepEqual(after.properties.reported.nested, { ok: true });
  await assert.rejects(registry.updateTwin(deviceId, { tags: { a: 1 } }, '"stale"'));
});

test('MQTT over WebSockets (443)', async () => {
  const { deviceId, key } = await newDevice('ws');
  const client = await open(deviceClient(deviceId, key, MqttWs));
  const msg = new Message('over ws');
  msg.properties.add('via', 'websocket');
  await client.sendEvent(msg);
  const [event] = await eventsOf(deviceId);
  assert.equal(Buffer.from(event.body, 'base64').toString(), 'over ws');
  assert.deepEqual(event.properties, { via: 'websocket' });
  const twin = await client.getTwin();
  assert.ok(twin.properties.desired.$version >= 1);
});

test('C2D queued while offline is delivered after connect', async () => {
  const { deviceId, key } = await newDevice('c2d');
  await control('POST', `/emulator/devices/${deviceId}/messages/devicebound`,
    { bodyText: 'while away', messageId: 'c2d-1', properties: { k: 'v w' } });
  const client = deviceClient(deviceId, key);
  const received = once(client, 'message');
  await open(client);
  const [msg] = await received;
  assert.equal(msg.data.toString(), 'while away');
  assert.equal(msg.messageId, 'c2d-1');
  assert.equal(msg.properties.getValue('k'), 'v w');
  await client.complete(msg);
});

test('bad credentials are refused as unauthorized', async () => {
  const { deviceId } = await newDevice('bad');
  const wrongKey = Buffer.from('not the key at all, 32 bytes!!!!').toString('base64');
  const client = deviceClient(deviceId, wrongKey);
  client.setOptions({ ca });
  await assert.rejects(client.open(), (e) => e.constructor.name === 'UnauthorizedError');
  const unknown = deviceClient(`${run}-nobody`, wrongKey);
  unknown.setOptions({ ca });
  await assert.rejects(unknown.open(), (e) => e.constructor.name === 'UnauthorizedError');
});

test('service C2D over AMQP (Client.send) reaches the device, with full feedback (getFeedbackReceiver)', async () => {
  const { deviceId, key } = await newDevice('amqp-c2d');
  const device = deviceClient(deviceId, key);
  const received = once(device, 'message');
  await open(device);
  const receiver = await new Promise((resolve, reject) => {
    service.getFeedbackReceiver((err, r) => (err ? reject(err) : resolve(r)));
  });
  const feedback = once(receiver, 'message', 15000);
  const msg = new Message(JSON.stringify({ cmd: 'reboot' }));
  msg.messageId = crypto.randomUUID(); // sent as an AMQP uuid: the device sees its text form
  msg.correlationId = `${run}-cid`;
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  msg.ack = 'full';
  msg.properties.add('k', 'v w');
  await service.send(deviceId, msg);

  const [got] = await received;
  assert.equal(got.data.toString(), '{"cmd":"reboot"}');
  assert.equal(got.messageId, msg.messageId);
  assert.equal(got.correlationId, msg.correlationId);
  assert.equal(got.properties.getValue('k'), 'v w');
  await device.complete(got);

  const [fb] = await feedback;
  const records = JSON.parse(fb.data.toString());
  assert.equal(records.length, 1);
  assert.equal(records[0].originalMessageId, msg.messageId);
  assert.equal(records[0].statusCode, 'Success');
  assert.equal(records[0].description, 'Success');
  assert.equal(records[0].deviceId, deviceId);
  assert.ok(records[0].deviceGenerationId);
  assert.ok(!Number.isNaN(Date.parse(records[0].enqueuedTimeUtc)));
  assert.equal(fb.contentType, 'application/vnd.microsoft.iothub.feedback.json');
  await new Promise((resolve, reject) => receiver.complete(fb, (e) => (e ? reject(e) : resolve())));

  await assert.rejects(service.send(`${run}-nobody`, new Message('x')), (e) => e.constructor.name === 'DeviceNotFoundError');
  await service.close();
});

test('service C2D over AMQP on WebSockets (AmqpWs)', async () => {
  const { deviceId, key } = await newDevice('amqp-ws-c2d');
  const device = deviceClient(deviceId, key);
  const received = once(device, 'message');
  await open(device);
  const overWs = ServiceClient.fromConnectionString(serviceCs, AmqpWs);
  const msg = new Message('over wss');
  msg.messageId = `${run}-ws`;
  await overWs.send(deviceId, msg);
  const [got] = await received;
  assert.equal(got.data.toString(), 'over wss');
  assert.equal(got.messageId, msg.messageId);
  await device.complete(got);
  await overWs.close();
});
