#include "keel_amqp.h"
#include <stdio.h>
#include <string.h>

int keel_amqp_describe_reply(amqp_rpc_reply_t reply, char *out, size_t out_len) {
    switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(out, out_len, "ok");
        return 0;
    case AMQP_RESPONSE_NONE:
        snprintf(out, out_len, "missing RPC reply");
        return -1;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(out, out_len, "%s", amqp_error_string2(reply.library_error));
        return -1;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = (amqp_connection_close_t *)reply.reply.decoded;
            snprintf(out, out_len, "server closed the connection: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = (amqp_channel_close_t *)reply.reply.decoded;
            snprintf(out, out_len, "server closed the channel: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else {
            snprintf(out, out_len, "server error, method 0x%08X", reply.reply.id);
        }
        return -1;
    }
    snprintf(out, out_len, "unknown reply");
    return -1;
}

int keel_amqp_login(amqp_connection_state_t conn, const char *vhost, int frame_max, int heartbeat,
                    const char *user, const char *password, const char *connection_name, char *error,
                    size_t error_len) {
    /* rabbitmq-c announces only authentication_failure_close and exchange_exchange_bindings;
       without connection.blocked the broker blocks publishers silently during an alarm, and
       without consumer_cancel_notify it drops a consumer whose queue is deleted without a word
       (the process then serves nothing, and looks alive). */
    amqp_table_entry_t capabilities[4];
    capabilities[0].key = amqp_cstring_bytes("authentication_failure_close");
    capabilities[1].key = amqp_cstring_bytes("exchange_exchange_bindings");
    capabilities[2].key = amqp_cstring_bytes("connection.blocked");
    capabilities[3].key = amqp_cstring_bytes("consumer_cancel_notify");
    for (int i = 0; i < 4; i++) {
        capabilities[i].value.kind = AMQP_FIELD_KIND_BOOLEAN;
        capabilities[i].value.value.boolean = 1;
    }
    amqp_table_entry_t properties[3];
    properties[0].key = amqp_cstring_bytes("capabilities");
    properties[0].value.kind = AMQP_FIELD_KIND_TABLE;
    properties[0].value.value.table.num_entries = 4;
    properties[0].value.value.table.entries = capabilities;
    properties[1].key = amqp_cstring_bytes("product");
    properties[1].value.kind = AMQP_FIELD_KIND_UTF8;
    properties[1].value.value.bytes = amqp_cstring_bytes("keel");
    int property_count = 2;
    if (connection_name != NULL) {
        properties[2].key = amqp_cstring_bytes("connection_name");
        properties[2].value.kind = AMQP_FIELD_KIND_UTF8;
        properties[2].value.value.bytes = amqp_cstring_bytes(connection_name);
        property_count = 3;
    }
    amqp_table_t client_properties = {property_count, properties};
    amqp_rpc_reply_t reply = amqp_login_with_properties(
        conn, vhost, 0, frame_max, heartbeat, &client_properties, AMQP_SASL_METHOD_PLAIN, user, password);
    return keel_amqp_describe_reply(reply, error, error_len);
}

int keel_amqp_queue_declare(amqp_connection_state_t conn, amqp_channel_t channel, const char *queue,
                            const char *dead_letter_exchange, const char *queue_type, int64_t max_length,
                            char *error, size_t error_len) {
    amqp_table_entry_t entries[3];
    amqp_table_t arguments = amqp_empty_table;
    int count = 0;
    if (dead_letter_exchange != NULL) {
        entries[count].key = amqp_cstring_bytes("x-dead-letter-exchange");
        entries[count].value.kind = AMQP_FIELD_KIND_UTF8;
        entries[count].value.value.bytes = amqp_cstring_bytes(dead_letter_exchange);
        count++;
    }
    if (queue_type != NULL) {
        entries[count].key = amqp_cstring_bytes("x-queue-type");
        entries[count].value.kind = AMQP_FIELD_KIND_UTF8;
        entries[count].value.value.bytes = amqp_cstring_bytes(queue_type);
        count++;
    }
    if (max_length > 0) {
        entries[count].key = amqp_cstring_bytes("x-max-length");
        entries[count].value.kind = AMQP_FIELD_KIND_I64;
        entries[count].value.value.i64 = max_length;
        count++;
    }
    if (count > 0) {
        arguments.num_entries = count;
        arguments.entries = entries;
    }
    amqp_queue_declare(conn, channel, amqp_cstring_bytes(queue), 0, 1, 0, 0, arguments);
    return keel_amqp_describe_reply(amqp_get_rpc_reply(conn), error, error_len);
}

int keel_amqp_publish(amqp_connection_state_t conn, amqp_channel_t channel, const char *exchange,
                      const char *routing_key, const void *body, size_t body_len, int persistent,
                      const char *message_id, const char *type, const char *reply_to,
                      const char *correlation_id, const char *user_id, int header_count,
                      const char *const *header_keys, const char *const *header_values) {
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = persistent ? 2 : 1;
    if (message_id) { props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG; props.message_id = amqp_cstring_bytes(message_id); }
    if (type) { props._flags |= AMQP_BASIC_TYPE_FLAG; props.type = amqp_cstring_bytes(type); }
    if (reply_to) { props._flags |= AMQP_BASIC_REPLY_TO_FLAG; props.reply_to = amqp_cstring_bytes(reply_to); }
    if (correlation_id) { props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG; props.correlation_id = amqp_cstring_bytes(correlation_id); }
    if (user_id) { props._flags |= AMQP_BASIC_USER_ID_FLAG; props.user_id = amqp_cstring_bytes(user_id); }
    amqp_table_entry_t entries[16];
    if (header_count > 16) header_count = 16;
    if (header_count > 0) {
        for (int i = 0; i < header_count; i++) {
            entries[i].key = amqp_cstring_bytes(header_keys[i]);
            entries[i].value.kind = AMQP_FIELD_KIND_UTF8;
            entries[i].value.value.bytes = amqp_cstring_bytes(header_values[i]);
        }
        props._flags |= AMQP_BASIC_HEADERS_FLAG;
        props.headers.num_entries = header_count;
        props.headers.entries = entries;
    }
    amqp_bytes_t payload;
    payload.len = body_len;
    payload.bytes = (void *)body;
    return amqp_basic_publish(conn, channel, amqp_cstring_bytes(exchange), amqp_cstring_bytes(routing_key), 0, 0,
                              &props, payload);
}

int keel_amqp_reopen_channel(amqp_connection_state_t conn, amqp_channel_t channel, char *error, size_t error_len) {
    amqp_channel_close_ok_t close_ok;
    memset(&close_ok, 0, sizeof(close_ok));
    int status = amqp_send_method(conn, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
    if (status != AMQP_STATUS_OK) {
        snprintf(error, error_len, "acknowledging the channel's close: %s", amqp_error_string2(status));
        return -1;
    }
    amqp_channel_open(conn, channel);
    return keel_amqp_describe_reply(amqp_get_rpc_reply(conn), error, error_len);
}

static int copy_bytes(amqp_bytes_t bytes, char *out, size_t out_len) {
    size_t n = bytes.len < out_len - 1 ? bytes.len : out_len - 1;
    memcpy(out, bytes.bytes, n);
    out[n] = 0;
    return (int)n;
}

static amqp_field_value_t *table_get(amqp_table_t *table, const char *key) {
    for (int i = 0; i < table->num_entries; i++) {
        amqp_table_entry_t *entry = &table->entries[i];
        if (entry->key.len == strlen(key) && memcmp(entry->key.bytes, key, entry->key.len) == 0) return &entry->value;
    }
    return NULL;
}

int keel_amqp_first_death(const amqp_basic_properties_t *properties, char *reason, size_t reason_len,
                          char *queue, size_t queue_len, int64_t *count) {
    if (!(properties->_flags & AMQP_BASIC_HEADERS_FLAG)) return -1;
    amqp_field_value_t *deaths = table_get((amqp_table_t *)&properties->headers, "x-death");
    if (!deaths || deaths->kind != AMQP_FIELD_KIND_ARRAY || deaths->value.array.num_entries < 1) return -1;
    amqp_field_value_t *first = &deaths->value.array.entries[0];
    if (first->kind != AMQP_FIELD_KIND_TABLE) return -1;
    amqp_field_value_t *value = table_get(&first->value.table, "reason");
    if (value && value->kind == AMQP_FIELD_KIND_UTF8) copy_bytes(value->value.bytes, reason, reason_len); else reason[0] = 0;
    value = table_get(&first->value.table, "queue");
    if (value && value->kind == AMQP_FIELD_KIND_UTF8) copy_bytes(value->value.bytes, queue, queue_len); else queue[0] = 0;
    value = table_get(&first->value.table, "count");
    *count = (value && value->kind == AMQP_FIELD_KIND_I64) ? value->value.i64 : 1;
    return 0;
}

int keel_amqp_consume_stream(amqp_connection_state_t conn, amqp_channel_t channel, const char *queue,
                             long long offset, char *error, size_t error_len) {
    amqp_table_entry_t entry;
    entry.key = amqp_cstring_bytes("x-stream-offset");
    if (offset < 0) {
        entry.value.kind = AMQP_FIELD_KIND_UTF8;
        entry.value.value.bytes = amqp_cstring_bytes("first");
    } else {
        entry.value.kind = AMQP_FIELD_KIND_I64;
        entry.value.value.i64 = offset;
    }
    amqp_table_t arguments = {.num_entries = 1, .entries = &entry};
    amqp_basic_consume(conn, channel, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, arguments);
    return keel_amqp_describe_reply(amqp_get_rpc_reply(conn), error, error_len);
}
