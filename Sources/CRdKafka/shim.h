// The only C surface Levee uses: librdkafka's client API and its in-process mock cluster.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
