# Shape of azure-iot-device's samples/sync-samples/send_message.py.
import os
import uuid

from azure.iot.device import IoTHubDeviceClient, Message

conn_str = os.getenv("IOTHUB_DEVICE_CONNECTION_STRING")
ca_cert = open(os.environ["IOTHUB_CA_CERT"]).read()


def main():
    device_client = IoTHubDeviceClient.create_from_connection_string(conn_str, server_verification_cert=ca_cert)
    device_client.connect()

    for i in range(3):
        print("sending message #" + str(i))
        msg = Message("test wind speed " + str(i))
        msg.message_id = uuid.uuid4()
        msg.correlation_id = "correlation-1234"
        msg.custom_properties["tornado-warning"] = "yes"
        msg.content_encoding = "utf-8"
        msg.content_type = "application/json"
        device_client.send_message(msg)
        print("done sending message #" + str(i))

    device_client.shutdown()


if __name__ == "__main__":
    main()
