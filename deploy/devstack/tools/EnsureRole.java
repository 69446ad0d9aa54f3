// Creates the devstack's application role: a login that is not a superuser, so that Cassandra's
// guardrails (which never apply to superusers) judge every statement the services and tests send,
// as ScyllaDB as it ships judges them. Run by `devstack up` with Cassandra's own jars on the
// class path (they include the DataStax Java driver); idempotent.
//
//   java -cp '<cassandra jars>/*' EnsureRole.java HOST PORT ROLE PASSWORD
import com.datastax.driver.core.Cluster;
import com.datastax.driver.core.Session;
import com.datastax.driver.core.exceptions.AuthenticationException;
import com.datastax.driver.core.exceptions.NoHostAvailableException;

public class EnsureRole {
    public static void main(String[] args) throws Exception {
        String host = args[0], role = args[2], password = args[3];
        int port = Integer.parseInt(args[1]);
        // The default superuser is created a moment after the node starts answering: until then
        // logging in as it fails, so retry for a minute.
        long deadline = System.currentTimeMillis() + 60_000;
        while (true) {
            try (Cluster cluster = Cluster.builder().addContactPoint(host).withPort(port)
                    .withCredentials("cassandra", "cassandra").withoutJMXReporting().build();
                 Session session = cluster.connect()) {
                session.execute("CREATE ROLE IF NOT EXISTS " + role + " WITH PASSWORD = '"
                        + password + "' AND LOGIN = true AND SUPERUSER = false");
                System.out.println("role " + role + " ready");
                return;
            } catch (AuthenticationException | NoHostAvailableException e) {
                if (System.currentTimeMillis() > deadline) throw e;
                Thread.sleep(500);
            }
        }
    }
}
