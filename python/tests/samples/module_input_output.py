# Shape of azure-iot-device's Edge module samples: receive on an input, forward to an output.
import os
import threading

from azure.iot.device import IoTHubModuleClient, Message

conn_str = os.getenv("IOTHUB_MODULE_CONNECTION_STRING")
ca_cert = open(os.environ["IOTHUB_CA_CERT"]).read()
done = threading.Event()


def main():
    module_client = IoTHubModuleClient.create_from_connection_string(conn_str, server_verification_cert=ca_cert)
    module_client.connect()

    def message_handler(message):
        if message.input_name == "input1":
            print("Message received on INPUT 1")
            print("the data in the message received was ")
            print(message.data)
            print("custom properties are")
            print(message.custom_properties)
            print("forwarding mesage to output1")
            module_client.send_message_to_output(message, "output1")
            done.set()
        else:
            print("message received on unknown input")

    module_client.on_message_received = message_handler
    print("READY", flush=True)
    done.wait(float(os.getenv("SAMPLE_TIMEOUT", "30")))
    module_client.send_message_to_output(Message("goodbye"), "output1")
    module_client.shutdown()


if __name__ == "__main__":
    main()
