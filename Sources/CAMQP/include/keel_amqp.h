// Thin C helpers over rabbitmq-c for what Swift cannot call (variadic amqp_login) or would
// need many lines of union juggling for (field tables).
#ifndef KEEL_AMQP_H
#define KEEL_AMQP_H

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>
#include <stddef.h>
#include <stdint.h>

/// Logs in with PLAIN credentials; `connection_name` (may be NULL) is the name the broker shows
/// for the connection (`rabbitmqctl list_connections client_properties`, the management UI).
/// Returns 0, or -1 with a message in `error`.
int keel_amqp_login(amqp_connection_state_t conn, const char *vhost, int frame_max, int heartbeat,
                    const char *user, const char *password, const char *connection_name, char *error,
                    size_t error_len);

/// Declares a durable queue; `dead_letter_exchange` (may be NULL) becomes x-dead-letter-exchange,
/// `queue_type` (may be NULL: the broker's default, classic) x-queue-type, and `max_length`
/// (0: none) x-max-length: the queue keeps its newest `max_length` messages.
/// Returns 0, or -1 with a message in `error`.
int keel_amqp_queue_declare(amqp_connection_state_t conn, amqp_channel_t channel, const char *queue,
                            const char *dead_letter_exchange, const char *queue_type, int64_t max_length,
                            char *error, size_t error_len);

/// Publishes one message. `header_keys`/`header_values` are `header_count` string headers.
/// Optional strings may be NULL. Returns the rabbitmq-c status (0 is success).
int keel_amqp_publish(amqp_connection_state_t conn, amqp_channel_t channel, const char *exchange,
                      const char *routing_key, const void *body, size_t body_len, int persistent,
                      const char *message_id, const char *type, const char *reply_to,
                      const char *correlation_id, const char *user_id, int header_count,
                      const char *const *header_keys, const char *const *header_values);
/* After the broker closed the channel (an error such as ACCESS_REFUSED): acknowledges the close
   and opens the channel again. 0 on success, else writes why to `error`. */
int keel_amqp_reopen_channel(amqp_connection_state_t conn, amqp_channel_t channel, char *error, size_t error_len);

/// Consumes a stream queue (manual acks) from `offset`, or from its first message when `offset`
/// is negative (`x-stream-offset`). Returns 0, or a failure described in `error`.
int keel_amqp_consume_stream(amqp_connection_state_t conn, amqp_channel_t channel, const char *queue,
                             long long offset, char *error, size_t error_len);

/// Copies the `reason` and `queue` of the first x-death entry (RabbitMQ's dead-letter record).
/// Returns 0 if found, -1 otherwise.
int keel_amqp_first_death(const amqp_basic_properties_t *properties, char *reason, size_t reason_len,
                          char *queue, size_t queue_len, int64_t *count);

/// Describes the last RPC reply of `conn` into `out`; returns 0 when it was normal.
int keel_amqp_describe_reply(amqp_rpc_reply_t reply, char *out, size_t out_len);

#endif
