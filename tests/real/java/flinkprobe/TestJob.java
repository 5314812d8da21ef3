package flinkprobe;

import java.time.Duration;
import java.util.Arrays;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.connector.source.lib.NumberSequenceSource;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;

/**
 * The one job the real-Flink tests submit; its behaviour is chosen by the program arguments.
 *
 * <pre>
 *   restart &lt;ms&gt;     fails &lt;ms&gt; after every (re)start; fixed-delay 500 ms, unlimited attempts
 *   finish &lt;ms&gt;      finishes after about &lt;ms&gt; (a bounded source)
 *   fail &lt;ms&gt;        fails once after &lt;ms&gt; with restarts disabled
 *   exhaust &lt;ms&gt;     fails &lt;ms&gt; after every start; fixed-delay 2 attempts: FAILED, numRestarts 2
 *   forever          runs until cancelled
 *   slowcancel &lt;ms&gt;  runs until cancelled, then ignores the cancellation for about &lt;ms&gt;
 * </pre>
 *
 * The job is named "flinkprobe-&lt;mode&gt;". Every failure message contains
 * "flinkprobe: intentional failure". Written against APIs present in both Flink 1.20 and 2.x:
 * restart strategies as Configuration options, a FLIP-27 source and the sink v2 DiscardingSink.
 */
public final class TestJob {

    static final String FAILURE_MESSAGE = "flinkprobe: intentional failure";
    /** Pause per record: the job stays nearly idle, and a deadline is checked often enough. */
    static final long RECORD_PAUSE_MS = 10;

    private TestJob() {}

    public static void main(String[] args) throws Exception {
        if (args.length == 0) {
            throw new IllegalArgumentException(
                    "usage: restart|finish|fail|exhaust <ms> | forever | slowcancel <ms>");
        }
        String mode = args[0];
        long ms = args.length > 1 ? Long.parseLong(args[1]) : 0;
        Configuration conf = new Configuration();
        long records = Long.MAX_VALUE;
        long failAfterMs = -1;
        long stallOnCancelMs = 0;
        switch (mode) {
            case "restart":
                fixedDelay(conf, Integer.MAX_VALUE);
                failAfterMs = requirePositive(mode, ms);
                break;
            case "finish":
                noRestarts(conf);
                records = Math.max(1, requirePositive(mode, ms) / RECORD_PAUSE_MS);
                break;
            case "fail":
                noRestarts(conf);
                failAfterMs = requirePositive(mode, ms);
                break;
            case "exhaust":
                fixedDelay(conf, 2);
                failAfterMs = requirePositive(mode, ms);
                break;
            case "forever":
                fixedDelay(conf, Integer.MAX_VALUE);
                break;
            case "slowcancel":
                noRestarts(conf);
                stallOnCancelMs = requirePositive(mode, ms);
                break;
            default:
                throw new IllegalArgumentException("unknown mode in " + Arrays.toString(args));
        }
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.setParallelism(1);
        env.fromSource(
                        new NumberSequenceSource(1, records),
                        WatermarkStrategy.noWatermarks(),
                        "flinkprobe-source")
                .map(new ScheduledBehaviour(mode, failAfterMs, stallOnCancelMs))
                .name("flinkprobe-" + mode + "-map")
                .sinkTo(new DiscardingSink<>());
        env.execute("flinkprobe-" + mode);
    }

    private static long requirePositive(String mode, long ms) {
        if (ms <= 0) {
            throw new IllegalArgumentException(mode + " needs a duration in ms > 0");
        }
        return ms;
    }

    private static void fixedDelay(Configuration conf, int attempts) {
        conf.set(RestartStrategyOptions.RESTART_STRATEGY, "fixed-delay");
        conf.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_ATTEMPTS, attempts);
        conf.set(
                RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_DELAY,
                Duration.ofMillis(500));
    }

    private static void noRestarts(Configuration conf) {
        conf.set(RestartStrategyOptions.RESTART_STRATEGY, "none");
    }

    /** Paces the records, fails on schedule, and stalls a cancellation when asked to. */
    static final class ScheduledBehaviour extends RichMapFunction<Long, Long> {
        private static final long serialVersionUID = 1L;

        private final String mode;
        private final long failAfterMs;
        private final long stallOnCancelMs;
        private transient long openedAtMs;
        private transient boolean stalled;

        ScheduledBehaviour(String mode, long failAfterMs, long stallOnCancelMs) {
            this.mode = mode;
            this.failAfterMs = failAfterMs;
            this.stallOnCancelMs = stallOnCancelMs;
        }

        @Override
        public void open(OpenContext openContext) {
            // Called again after every restart, so the failure schedule restarts with the job.
            openedAtMs = System.currentTimeMillis();
            stalled = false;
        }

        @Override
        public Long map(Long value) throws Exception {
            if (failAfterMs >= 0 && System.currentTimeMillis() - openedAtMs >= failAfterMs) {
                throw new RuntimeException(
                        FAILURE_MESSAGE + " (mode " + mode + ", after " + failAfterMs + " ms)");
            }
            try {
                Thread.sleep(RECORD_PAUSE_MS);
            } catch (InterruptedException cancelled) {
                if (stallOnCancelMs <= 0) {
                    throw cancelled;
                }
                stallIgnoringInterrupts();
                Thread.currentThread().interrupt();
            }
            return value;
        }

        @Override
        public void close() {
            // A cancellation that arrives while the task thread is outside map() lands here.
            if (stallOnCancelMs > 0 && !stalled) {
                stallIgnoringInterrupts();
            }
        }

        private void stallIgnoringInterrupts() {
            stalled = true;
            long deadline = System.currentTimeMillis() + stallOnCancelMs;
            boolean interrupted = false;
            for (long left = stallOnCancelMs; left > 0; left = deadline - System.currentTimeMillis()) {
                try {
                    Thread.sleep(left);
                } catch (InterruptedException ignored) {
                    interrupted = true;
                }
            }
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }
}
